"""Frozen-backbone pool probe on a checkpoint made by `poolwise vision train` (no hub here)."""

import json

import numpy as np
import pytest
import torch
from _images import image_tree

from poolwise.cli import main
from poolwise.vision.models import create_model, load_checkpoint
from poolwise.vision.probe import ProbeSpec, run_probe

ARCH = ["--patch-size", "7", "--embed-dim", "24", "--depth", "1", "--num-heads", "2",
        "--mlp-ratio", "2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("probe") / "run"
    assert main(["vision", "train", "--model", "vit_tiny_patch16_224", *ARCH, "--epochs", "1",
                 "--batch-size", "128", "--threads", "1", "--out", str(run)]) == 0
    return run


def test_probe_caches_tokens_once_and_compares_pools(trained, tmp_path, capsys):
    out = tmp_path / "probe"
    argv = ["vision", "probe", "--model", "vit_tiny_patch16_224", *ARCH, "--checkpoint",
            str(trained / "model.safetensors"), "--pools", "token,avg,ggem", "--seeds", "2",
            "--epochs", "20", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "tokens: [3000, 17, 24] train, [1000, 17, 24] test (float16)" in printed
    assert "in the checkpoint but unused: pool.p" in printed  # the run's GGeM p is not reused
    # the cache holds the checkpointed backbone's final tokens (CLS first), in float16
    model = create_model("vit_tiny_patch16_224", pool="avg", in_chans=1, img_size=28,
                         patch_size=7, embed_dim=24, depth=1, num_heads=2, mlp_ratio=2.0)
    load_checkpoint(model, trained / "model.safetensors", strict=False)
    from poolwise.vision.data import load_embedded

    images, _ = load_embedded()["test"].dataset.__getitems__(list(range(8)))
    with torch.no_grad():
        expected = model.eval().forward_features(images)
    cached = np.load(out / "tokens" / "test_tokens.npy", mmap_mode="r")
    assert cached.dtype == np.float16
    np.testing.assert_allclose(cached[:8].astype(np.float32), expected.numpy(), rtol=2e-3,
                               atol=2e-3)
    report = json.loads((out / "probe.json").read_text())
    rows = {r["pool"]: r for r in report["rows"]}
    assert set(rows) == {"token", "avg", "ggem"}
    assert all(rows[p]["accuracy"]["n"] == 2 for p in rows)
    assert all(0.3 < rows[p]["accuracy"]["mean"] / 100 <= 1 for p in rows)  # 10 classes
    assert len(rows["ggem"]["p"]) == 2 and rows["avg"]["p"] is None  # one p per head
    assert (out / "probe.md").is_file() and (out / "probe.png").is_file()
    # a second call neither recomputes the tokens nor retrains a cell
    mtime = (out / "tokens" / "train_tokens.npy").stat().st_mtime_ns
    assert main(argv) == 0
    assert capsys.readouterr().out.count("done earlier") == 6
    assert (out / "tokens" / "train_tokens.npy").stat().st_mtime_ns == mtime


def test_probe_refuses_another_configuration_and_bad_options(trained, tmp_path, capsys):
    out = tmp_path / "probe"
    spec = ProbeSpec(model="vit_tiny_patch16_224", checkpoint=str(trained / "model.safetensors"),
                     model_kwargs={"in_chans": 1, "img_size": 28, "patch_size": 7,
                                   "embed_dim": 24, "depth": 1, "num_heads": 2,
                                   "mlp_ratio": 2.0},
                     pools=["avg"], seeds=1, epochs=1)
    run_probe(spec, out)
    other = ProbeSpec(**{**spec.to_json(), "checkpoint": None})
    with pytest.raises(ValueError, match="holds a probe with other settings"):
        run_probe(other, out)
    with pytest.raises(ValueError, match=r"unknown pools \['mean'\]"):
        ProbeSpec(model="vit_tiny_patch16_224", pools=["mean"])
    with pytest.raises(SystemExit):
        main(["vision", "probe", "--model", "vit_tiny_patch16_224", "--pretrained",
              "--checkpoint", "x.safetensors", "--out", str(tmp_path / "x")])
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_damaged_token_cache_is_named(tmp_path):
    spec = ProbeSpec(model="vit_tiny_patch16_224", model_kwargs={
        "in_chans": 1, "img_size": 28, "patch_size": 7, "embed_dim": 24, "depth": 1,
        "num_heads": 2, "mlp_ratio": 2.0}, pools=["avg"], seeds=1, epochs=1)
    out = tmp_path / "probe"
    run_probe(spec, out)
    tokens = out / "tokens" / "test_tokens.npy"
    good = tokens.read_bytes()
    np.save(tokens, np.array([{"not": "tokens"}], dtype=object))  # a pickled object array
    (out / "cells" / "avg-seed0.json").unlink()
    with pytest.raises(ValueError, match=r"tokens: a cached test file cannot be read "
                       r"\(ValueError: .*\); delete .*tokens to compute the tokens again"):
        run_probe(spec, out)
    np.save(tokens, np.zeros((3, 17, 24), np.float16))
    with pytest.raises(ValueError, match=r"test_tokens.npy: float16 \[3, 17, 24\], but the "
                       r"cache recorded floats of shape \[1000, 17, 24\]"):
        run_probe(spec, out)
    tokens.write_bytes(good)
    run_probe(spec, out)
    assert (out / "cells" / "avg-seed0.json").is_file()


def test_the_same_images_by_another_path_reuse_the_tokens(tmp_path, monkeypatch):
    from PIL import Image

    image_tree(tmp_path / "tree", size=16)
    kwargs = {"img_size": 16, "patch_size": 8, "embed_dim": 24, "depth": 1, "num_heads": 2}
    spec = ProbeSpec(model="vit_tiny_patch16_224", model_kwargs=kwargs,
                     data=str(tmp_path / "tree"), pools=["avg"], seeds=1, epochs=1)
    run_probe(spec, tmp_path / "probe")
    cache = tmp_path / "probe" / "tokens" / "train_tokens.npy"
    mtime = cache.stat().st_mtime_ns
    monkeypatch.chdir(tmp_path)
    run_probe(ProbeSpec(**{**spec.to_json(), "data": "tree"}), tmp_path / "probe")
    assert cache.stat().st_mtime_ns == mtime  # reused, not recomputed
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "tree" / "test" / "a" /
                                                          "0.png")
    with pytest.raises(ValueError, match=r"holds tokens of another configuration \(differing: "
                       r"data; 'data' is the images' content\)"):
        run_probe(spec, tmp_path / "probe")
