"""Recipes (:mod:`poolwise.vision.train.recipe`): bad values refused before any work, the
shipped recipes, the ImageNet recipe on a tiny tree."""

import json

import numpy as np

from poolwise.vision.train.classification import run_classification
from poolwise.vision.train.spec import RunSpec


def test_bad_recipes_fail_before_the_run_folder_is_written(tmp_path, capsys):
    from poolwise.cli import main

    recipe = tmp_path / "r.toml"
    for text, message in [
        ('epochs = 1\nmixxup = 0.8\n', "unknown recipe key(s) mixxup"),
        ('epochs = "ten"\n', "epochs = 'ten' is not a valid value for epochs"),
        ('lr = true\n', "lr = True is not a valid value for lr"),
        ('epochs = [1\n', "not a valid TOML recipe"),
    ]:
        recipe.write_text(text)
        assert main(["vision", "train", "--recipe", str(recipe), "--out",
                     str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and str(recipe) in err
    recipe.write_text('classes = [3]\nmixup = 0.8\nepochs = 1\n')  # one class: nothing to learn
    assert main(["vision", "train", "--recipe", str(recipe), "--out",
                 str(tmp_path / "run")]) == 2
    assert "classes = [3]: must be two or more distinct class indices" in \
        capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main(["vision", "train", "--recipe", "no_such_recipe", "--out",
                 str(tmp_path / "run")]) == 2
    assert "shipped: tiny28_cpu" in capsys.readouterr().err


def test_shipped_recipes_parse_and_the_cpu_one_runs(tmp_path, capsys):
    from poolwise.cli import main
    from poolwise.vision.train.recipe import check_recipe, read_recipe, shipped_recipes

    names = shipped_recipes()
    assert {"tiny28_cpu", "vit_base_ggem_in1k", "vit_large_ggem_in1k"} <= set(names)
    for name in names:
        path, table = read_recipe(name)
        check_recipe(table, RunSpec, str(path))
    out = tmp_path / "run"
    assert main(["vision", "train", "--recipe", "tiny28_cpu", "--epochs", "2", "--out",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pool ggem (6 groups)" in printed and "ema" in printed
    spec = json.loads((out / "run.json").read_text())
    assert spec["epochs"] == 2 and spec["mixup"] == 0.8 and spec["layer_decay"] == 0.75
    assert spec["model_kwargs"]["num_heads"] == 6  # the recipe's table, then the option
    result = json.loads((out / "result.json").read_text())
    assert result["accuracy"] > 0.3 and result["ema"]["accuracy"] > 0.3  # 10 classes


def test_the_imagenet_recipe_runs_end_to_end_on_a_tiny_image_folder(tmp_path):
    """The shipped ViT-B/16 ImageNet-1k recipe (LAMB, layer decay, RandAugment, Mixup/CutMix,
    drop path, clipping, EMA, bf16), shrunk only in size: one block, 32x32 images, no hub."""
    from PIL import Image

    from poolwise.vision.train.recipe import check_recipe, read_recipe

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(
                    tmp_path / "data" / split / cls / f"{i}.png")
    path, table = read_recipe("vit_base_ggem_in1k")
    values = check_recipe(table, RunSpec, str(path))
    values.update(pretrained=False, data=str(tmp_path / "data"), epochs=1, batch_size=4,
                  model_kwargs={"img_size": 32, "depth": 1})
    result = run_classification(RunSpec(**values), tmp_path / "run")
    assert result["spec"]["opt"] == "lamb" and result["groups"] == 12
    assert "ema" in result and len(result["p"]) == 12
