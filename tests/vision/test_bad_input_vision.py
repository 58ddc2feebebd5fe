"""Vision bad input that only the data or the whole list can show: each is refused by name,
with exit status 2 on the command line, before anything is written to the run folder."""

import pytest

from poolwise.cli import main
from poolwise.vision.compare import run_grid
from poolwise.vision.train.classification import run_classification
from poolwise.vision.train.spec import RunSpec

TINY = ["--depth", "1", "--embed-dim", "24", "--num-heads", "2", "--threads", "1"]


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
