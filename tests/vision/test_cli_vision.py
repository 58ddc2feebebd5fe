"""End-to-end `poolwise vision ...` runs on the embedded images (tiny model, one epoch)."""

import json

from poolwise.cli import main

TINY = ["--embed-dim", "24", "--depth", "1", "--num-heads", "2", "--batch-size", "128",
        "--threads", "1"]


def test_train_then_dependence(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["vision", "train", "--epochs", "1", "--pool", "ggem", *TINY,
                 "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "epoch 1: train loss" in out and "learned p: " in out
    spec = json.loads((run / "run.json").read_text())
    assert spec["model_kwargs"] == {"patch_size": 7, "embed_dim": 24, "depth": 1,
                                    "num_heads": 2, "mlp_ratio": 2.0, "img_size": 28}
    assert spec["p_lr_mult"] == 10.0

    assert main(["vision", "dependence", str(tmp_path), "--out", str(tmp_path / "dep")]) == 0
    out = capsys.readouterr().out
    rows = json.loads((tmp_path / "dep" / "dependence.json").read_text())
    assert rows[0]["groups"] == 2 and 0 <= rows[0]["mean"] <= 1
    assert f"| {run} | ggem | 0 | 2 |" in out

    assert main(["vision", "train", "--epochs", "2", *TINY, "--out", str(run)]) == 2
    assert "other settings (epochs)" in capsys.readouterr().err


def test_errors_are_clear(tmp_path, capsys):
    assert main(["vision", "compare", "--pools", "avg,mean", "--out", str(tmp_path)]) == 2
    assert "unknown pools ['mean']" in capsys.readouterr().err
    assert main(["vision", "train", "--data", str(tmp_path / "none"), "--out",
                 str(tmp_path / "r")]) == 2
    assert "none: not 'embedded'" in capsys.readouterr().err
    assert main(["vision", "dependence", str(tmp_path)]) == 2
    assert "no run folder" in capsys.readouterr().err


def test_export_ggem_vit_matches_pytorch(tmp_path, capsys):
    import numpy as np
    import pytest
    import torch

    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from poolwise.vision.train import load_trained

    run = tmp_path / "run"
    assert main(["vision", "train", "--epochs", "1", *TINY, "--out", str(run)]) == 0
    assert main(["vision", "export", str(run)]) == 0
    assert main(["vision", "export", str(run), "--format", "torchscript", "--embedding"]) == 0
    model, _ = load_trained(run)
    images = torch.randn(64, 1, 28, 28)
    with torch.no_grad():
        expected = torch.softmax(model(images), -1).numpy()
        embedding = model.forward_head(model.forward_features(images), pre_logits=True).numpy()
    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    script = torch.jit.load(str(run / "model.pt"))
    for batch in (1, 64):
        got = session.run(None, {"images": images[:batch].numpy()})[0]
        np.testing.assert_allclose(got, expected[:batch], atol=1e-5)
        np.testing.assert_allclose(script(images[:batch]).detach().numpy(), embedding[:batch],
                                   atol=1e-5)
    graph = onnx.load(str(run / "model.onnx")).graph
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}  # standard ops only
    assert "Pow" in {node.op_type for node in graph.node}  # GGeM, as plain ops
    assert json.loads((run / "model.onnx.json").read_text())["input"] == ["batch", 1, 28, 28]
