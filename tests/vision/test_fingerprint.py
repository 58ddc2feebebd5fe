"""Vision runs record their data's content: replaced images are refused at resume, the same
data by another path is accepted."""

import json
import shutil

import numpy as np
import pytest
import torch
from _images import image_tree
from PIL import Image

from poolwise.vision.data import fingerprint as fp
from poolwise.vision.train.classification import load_trained, run_classification
from poolwise.vision.train.spec import RunSpec

TINY = {"img_size": 16, "patch_size": 8, "embed_dim": 24, "depth": 1, "num_heads": 2,
        "mlp_ratio": 2.0}


def _tree(root):
    image_tree(root, per_class=6, size=16)


def test_the_fingerprint_is_of_content_names_and_sizes(tmp_path, monkeypatch):
    _tree(tmp_path / "d")
    first = fp.data_fingerprint(str(tmp_path / "d"))
    assert first["files"] == 24 and first["bytes"] == sum(
        p.stat().st_size for p in (tmp_path / "d").rglob("*.png"))
    shutil.copytree(tmp_path / "d", tmp_path / "copy")
    (tmp_path / "copy" / ".DS_Store").write_bytes(b"x")  # hidden files are not data
    assert fp.data_fingerprint(str(tmp_path / "copy")) == first
    monkeypatch.chdir(tmp_path)
    assert fp.data_fingerprint("d") == first  # relative path
    (tmp_path / "d" / "train" / "a" / "0.png").rename(tmp_path / "d" / "train" / "b" / "9.png")
    assert fp.data_fingerprint("d")["sha256"] != first["sha256"]  # a file moved class


def test_a_large_file_is_read_at_its_head_and_tail(tmp_path):
    big = tmp_path / "big.bin"
    content = bytearray(np.random.default_rng(0).integers(0, 255, fp.WHOLE + 10_000,
                                                          dtype=np.uint8).tobytes())
    big.write_bytes(content)
    before = fp.files_fingerprint(tmp_path, [big])
    content[-1] ^= 1
    big.write_bytes(content)  # the tail changed (same size)
    assert fp.files_fingerprint(tmp_path, [big]) != before
    content[-1] ^= 1
    content[fp.PART + 5] ^= 1
    big.write_bytes(content)  # the middle changed: documented as not seen
    assert fp.files_fingerprint(tmp_path, [big]) == before


def test_embedded_and_missing_data():
    assert fp.data_fingerprint("embedded")["files"] == 1
    with pytest.raises(FileNotFoundError, match="nowhere: not 'embedded'"):
        fp.data_fingerprint("nowhere")


def test_resume_refuses_replaced_images_and_accepts_the_same_data_elsewhere(tmp_path,
                                                                            monkeypatch):
    torch.set_num_threads(1)
    _tree(tmp_path / "d")
    spec = RunSpec(model="vit_tiny_patch16_224", pool="ggem", model_kwargs=TINY,
                   data=str(tmp_path / "d"), epochs=1, batch_size=8, lr=1e-3)
    result = run_classification(spec, tmp_path / "run")
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())["data_fingerprint"]
    assert recorded == fp.data_fingerprint(str(tmp_path / "d"))
    shutil.copytree(tmp_path / "d", tmp_path / "moved")
    monkeypatch.chdir(tmp_path)
    for name in ("moved", str(tmp_path / "moved"), "d"):  # a copy, absolute, relative
        spec.data = name
        assert run_classification(spec, tmp_path / "run") == result
    _, loaded = load_trained(tmp_path / "run")
    assert loaded.data == str(tmp_path / "d")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "d" / "test" / "a" / "0.png")
    with pytest.raises(ValueError, match=r"run was trained on other data than d holds now "
                       r"\(recorded: 24 files, .* bytes, sha256 [0-9a-f]{12}; now: 24 files"):
        run_classification(spec, tmp_path / "run")


def test_a_run_folder_from_before_fingerprints_is_refused_with_the_reason(tmp_path):
    spec = RunSpec(model="vit_tiny_patch16_224", pool="ggem", model_kwargs=TINY,
                   data="embedded", epochs=1)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "run.json").write_text(json.dumps(spec.to_json()))
    with pytest.raises(ValueError, match=r"old: this run was started by a poolwise older than "
                       r".*did not record what its data held.*another --out folder"):
        run_classification(spec, tmp_path / "old")


def test_clip_pairs_files_are_fingerprinted_with_the_images_they_name(tmp_path):
    image_tree(tmp_path / "pairs", per_class=2, size=16, splits=("img",))
    rows = ["filepath\ttitle", "img/a/0.png\ta photo", "img/a/1.png\tanother",
            "img/b/0.png\ta third"]
    (tmp_path / "pairs" / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "pairs" / "test.csv").write_text("\n".join(rows[:2]) + "\n")
    name = f"{tmp_path}/pairs/train.csv,{tmp_path}/pairs/test.csv"
    first = fp.data_fingerprint(name)
    assert first["files"] == 5  # two CSV files, three images (img/b/1.png is not named)
    shutil.copytree(tmp_path / "pairs", tmp_path / "moved")
    assert fp.data_fingerprint(name.replace("/pairs/", "/moved/")) == first
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "pairs" / "img" / "a" /
                                                          "1.png")
    assert fp.data_fingerprint(name)["sha256"] != first["sha256"]
    (tmp_path / "pairs" / "img" / "b" / "0.png").unlink()
    with pytest.raises(ValueError, match=r"train.csv: row 4: image .*0.png does not exist"):
        fp.data_fingerprint(name)
