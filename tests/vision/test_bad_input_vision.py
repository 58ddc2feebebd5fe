"""Vision bad input, case by case: each is refused with exit status 2 and a message naming the
value, option, file or folder at fault, before anything is written to the run folder (or, for
what only training can show, before the first epoch)."""

import pytest
from _images import image_tree

from poolwise.cli import main
from poolwise.vision.compare import run_grid
from poolwise.vision.train.classification import run_classification
from poolwise.vision.train.spec import RunSpec

TINY = ["--embed-dim", "24", "--depth", "1", "--num-heads", "2", "--batch-size", "128",
        "--threads", "1"]


@pytest.mark.parametrize(("extra", "named"), [
    (["--img-size", "0"], "argument --img-size: must be at least 1, got 0"),
    (["--lr", "nan"], "argument --lr: must be a finite number > 0, got nan"),
    (["--classes", "0,99"], "classes [99] out of range for 10 classes"),
    (["--classes", "1,1"], "classes = [1, 1]: must be two or more distinct class indices"),
    (["--warmup-epochs", "-3"], "warmup_epochs = -3.0: must be a finite number >= 0"),
    (["--pool", "mean"], "argument --pool: invalid choice: 'mean'"),
])
def test_a_bad_option_is_named_and_leaves_no_folder(tmp_path, capsys, extra, named):
    out = tmp_path / "run"
    try:
        code = main(["vision", "train", "--epochs", "1", *TINY, *extra, "--out", str(out)])
    except SystemExit as exit_info:  # argparse's own refusals
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2 and named in err and "bug in poolwise" not in err
    assert not out.exists()


def test_an_image_size_that_in_memory_images_do_not_have_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["vision", "train", "--epochs", "1", *TINY, "--img-size", "35",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "data 'embedded' holds 28x28 images in memory" in err
    assert "35x35 was asked for (img_size); give --img-size 28" in err
    assert "bug in poolwise" not in err and not out.exists()
    probe = tmp_path / "probe"
    assert main(["vision", "probe", "--model", "vit_tiny_patch16_224", "--pools", "avg",
                 "--seeds", "1", "--img-size", "35", "--patch-size", "7", *TINY[:6],
                 "--out", str(probe)]) == 2
    assert "35x35 was asked for (img_size)" in capsys.readouterr().err and not probe.exists()


@pytest.mark.parametrize("command", [
    ["vision", "compare", "--pools", "avg,ggem,avg"],
    ["vision", "probe", "--model", "vit_tiny_patch16_224", "--pools", "gem,gem"],
    ["pain", "compare", "cohort.npz", "--models", "cnn_tap,cnn_tap"],
])
def test_a_list_that_names_something_twice_is_refused(tmp_path, capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "named more than once" in err
    assert command[-1].split(",")[-1] in err.split("named more than once")[0]
    assert not (tmp_path / "out").exists()


def test_the_library_grid_refuses_a_pool_named_twice(tmp_path):
    with pytest.raises(ValueError, match="pool 'avg' with seed 0 is asked for twice"):
        run_grid(tmp_path, RunSpec(), ["avg", "gem", "avg"], [0], run_classification)
    assert not tmp_path.joinpath("avg-seed0").exists()


@pytest.mark.parametrize(("recipe", "named"), [
    ("lr = -1", "lr = -1: must be a finite number > 0"),
    ("lr = nan", "lr = nan: must be a finite number > 0"),
    ("epochs = 0", "epochs = 0: must be a whole number >= 1"),
    ("mixup_prob = 1.5", "mixup_prob = 1.5: must be a finite number >= 0 and <= 1"),
    ("accum_steps = 0", "accum_steps = 0: must be a whole number >= 1"),
    ("warmup_epochs = -3.0", "warmup_epochs = -3.0: must be a finite number >= 0"),
    ("ema_decay = 1.0", "ema_decay = 1.0: must be a finite number > 0 and < 1"),
    ('[model_kwargs]\nimg_size = "28"', "model_kwargs.img_size = '28': must be a whole number"),
    ("[model_kwargs]\nfoo = 1", "timm's vit_tiny_patch16_224 takes no argument foo"),
])
def test_a_bad_recipe_value_is_named_and_leaves_no_folder(tmp_path, capsys, recipe, named):
    path = tmp_path / "recipe.toml"
    path.write_text(recipe + "\n")
    out = tmp_path / "run"
    assert main(["vision", "train", "--recipe", str(path), *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert named in err and "bug in poolwise" not in err
    assert not out.exists()  # the fixed recipe can use the same --out


def test_a_run_whose_only_step_is_at_the_warm_up_lr_0_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["vision", "train", "--epochs", "1", "--embed-dim", "24", "--depth", "1",
                 "--num-heads", "2", "--batch-size", "5000", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "the run has 1 optimiser step(s) (1 epoch(s) of 1), taken at the warm-up's " \
           "starting lr 0" in err
    assert not out.exists()


@pytest.mark.parametrize(("per_class", "named"), [
    (5, "no test images to score the run"),
    (12, "no test class has two images, so retrieval of the test images is undefined"),
])
def test_a_retrieval_tree_too_small_to_score_is_refused_before_training(tmp_path, capsys,
                                                                        per_class, named):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, classes in (("train", "abcd"), ("test", "efgh")):
        for c in classes:
            (tmp_path / "tree" / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)).save(
                    tmp_path / "tree" / split / c / f"{i}.png")
    out = tmp_path / "runs" / "r"
    assert main(["vision", "retrieval", "--data", str(tmp_path / "tree"), *TINY,
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert named in err and "every 10th training image of each class" in err
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing left


def test_an_image_that_cannot_be_decoded_is_named(tmp_path, capsys):
    image_tree(tmp_path / "tree")
    bad = tmp_path / "tree" / "train" / "b" / "2.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated
    assert main(["vision", "train", "--data", str(tmp_path / "tree"), "--epochs", "1", *TINY,
                 "--batch-size", "4", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: cannot be read as an image" in err and "bug in poolwise" not in err


def test_images_that_cannot_be_opened_are_refused_before_any_work(tmp_path, capsys, monkeypatch):
    import numpy as np
    from PIL import Image

    image_tree(tmp_path / "tree")
    not_image = tmp_path / "tree" / "test" / "a" / "3.png"
    not_image.write_bytes(b"this is not a PNG")
    args = ["vision", "train", "--data", str(tmp_path / "tree"), "--epochs", "1", *TINY,
            "--batch-size", "4", "--out", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"1 of 8 image(s) cannot be opened (first: {not_image} (UnidentifiedImageError" in err
    assert "replace or remove them" in err and "bug in poolwise" not in err
    assert not (tmp_path / "run" / "run.json").exists()
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(not_image)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # 28 x 28 = 784 > 2 x 300
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "8 of 8 image(s) cannot be opened" in err and "MAX_IMAGE_PIXELS" in err
