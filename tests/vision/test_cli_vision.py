"""End-to-end `poolwise vision ...` runs on the embedded images (tiny model, one epoch)."""

import json

import pytest

from poolwise.cli import main

TINY = ["--embed-dim", "24", "--depth", "1", "--num-heads", "2", "--batch-size", "128",
        "--threads", "1"]


def test_train_then_dependence(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["vision", "train", "--epochs", "1", "--pool", "ggem", *TINY,
                 "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "epoch 1: train loss" in out and "learned p: " in out
    # the resolved model is printed first and stored
    assert out.splitlines()[0].startswith("vit_tiny_patch16_224: 0.")
    assert "4x4 patches of 7x7, 1 prefix tokens, 2 heads, pool ggem (2 groups)" in out
    info = json.loads((run / "model.json").read_text())
    assert (info["patch_grid"], info["prefix_tokens"], info["groups"]) == ([4, 4], 1, 2)
    spec = json.loads((run / "run.json").read_text())
    assert spec["model_kwargs"] == {"patch_size": 7, "embed_dim": 24, "depth": 1,
                                    "num_heads": 2, "mlp_ratio": 2.0, "img_size": 28}
    assert spec["p_lr_mult"] == 10.0
    # the library resolves the same spec from the same options, defaults included
    from poolwise.vision.train.recipe import resolve_spec

    again = resolve_spec({"pool": "ggem", "epochs": 1, "batch_size": 128},
                         model_kwargs={"embed_dim": 24, "depth": 1, "num_heads": 2})
    assert spec.pop("data_fingerprint")["files"] == 1  # the embedded archive's content
    assert again.to_json() == spec

    assert main(["vision", "dependence", str(tmp_path), "--out", str(tmp_path / "dep")]) == 0
    out = capsys.readouterr().out
    rows = json.loads((tmp_path / "dep" / "dependence.json").read_text())
    assert rows[0]["groups"] == 2 and 0 <= rows[0]["mean"] <= 1
    assert f"| {run} | ggem | 0 | 2 |" in out

    assert main(["vision", "train", "--epochs", "2", *TINY, "--out", str(run)]) == 2
    assert "other settings (epochs)" in capsys.readouterr().err


def test_resolve_spec_precedence_and_refusals(tmp_path):
    import pytest

    from poolwise.vision.train.recipe import resolve_spec
    from poolwise.vision.train.spec import RunSpec

    spec = resolve_spec({"lr": 0.01, "epochs": None}, recipe="tiny28_cpu",
                        model_kwargs={"depth": 2}, defaults={"epochs": 99, "lr": 1.0})
    assert spec.lr == 0.01  # options over the recipe over the command's defaults
    assert spec.epochs == 3  # the recipe's, over the command's default (None is not given)
    assert spec.model_kwargs["depth"] == 2 and spec.model_kwargs["patch_size"] == 7
    assert spec.p_lr_mult == RunSpec.p_lr_mult == 10.0
    with pytest.raises(ValueError, match=r"unknown run option\(s\) learning_rate"):
        resolve_spec({"learning_rate": 1.0})
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = 'fast'\n")
    with pytest.raises(ValueError, match=f"{bad}: lr = 'fast' is not a valid value"):
        resolve_spec({}, recipe=bad)


def test_errors_are_clear(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as exit_info:  # names are checked against the registry
        main(["vision", "compare", "--pools", "avg,mean", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "unknown pool(s) mean; known: avg," in err
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
    from poolwise.vision.train.classification import load_trained

    run = tmp_path / "run"
    assert main(["vision", "train", "--epochs", "1", *TINY, "--out", str(run)]) == 0
    assert main(["vision", "export", str(run)]) == 0
    with pytest.warns(FutureWarning, match="TorchScript is in maintenance mode"):
        assert main(["vision", "export", str(run), "--format", "torchscript",
                     "--embedding"]) == 0
    model, _ = load_trained(run)
    images = torch.randn(64, 1, 28, 28)
    with torch.no_grad():
        expected = torch.softmax(model(images), -1).numpy()
        embedding = model.forward_head(model.forward_features(images), pre_logits=True).numpy()
    export = run / "export"  # beside the run's own files, never over them
    session = ort.InferenceSession(str(export / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    script = torch.jit.load(str(export / "model.pt"))
    for batch in (1, 64):
        got = session.run(None, {"images": images[:batch].numpy()})[0]
        np.testing.assert_allclose(got, expected[:batch], atol=1e-5)
        np.testing.assert_allclose(script(images[:batch]).detach().numpy(), embedding[:batch],
                                   atol=1e-5)
    graph = onnx.load(str(export / "model.onnx")).graph
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}  # standard ops only
    assert "Pow" in {node.op_type for node in graph.node}  # GGeM, as plain ops
    assert json.loads((export / "model.onnx.json").read_text())["input"] == ["batch", 1, 28, 28]
    assert main(["vision", "export", str(run)]) == 0  # an earlier export is replaced
    for out, named in ((run / "result.json", "exists and is not a poolwise export"),
                       (run / "model", "exists and is not a poolwise export"),  # model.json
                       (run / "model.safetensors", "would overwrite the weights"),
                       (run, "is a folder")):
        assert main(["vision", "export", str(run), "--out", str(out)]) == 2
        assert named in capsys.readouterr().err


def test_a_named_model_is_never_resized_silently(tmp_path, capsys):
    # no --model: the documented default, vit_tiny_patch16_224 with --preset tiny28
    # a named ViT is built as timm defines it: patch 16 cannot tile 28x28 images
    assert main(["vision", "train", "--model", "vit_tiny_patch16_224", "--epochs", "1",
                 "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "patch size (16, 16) does not divide the image size (28, 28)" in err
    assert not (tmp_path / "a" / "run.json").exists()
    for flag in (["--pretrained"], ["--checkpoint", "w.safetensors"]):
        assert main(["vision", "train", "--model", "vit_small_patch16_224", "--preset",
                     "tiny28", *flag, "--out", str(tmp_path / "b")]) == 2
        err = capsys.readouterr().err
        assert f"--preset tiny28 changes the architecture of vit_small_patch16_224, and {flag[0]}" \
            in err
    assert main(["vision", "train", "--model", "resnet18", "--preset", "tiny28",
                 "--out", str(tmp_path / "c")]) == 2
    assert "sizes a ViT; resnet18 is not one" in capsys.readouterr().err


def test_every_spec_field_is_reachable_from_the_cli(tmp_path):
    import dataclasses

    from poolwise.cli import build_parser
    from poolwise.vision.train.spec import RunSpec

    run = tmp_path / "run"
    assert main(["vision", "train", "--epochs", "1", *TINY, "--classes", "0,1,7",
                 "--pool-kwargs", '{"negative": "softplus"}', "--hflip", "0", "--accum-steps",
                 "2", "--ema-decay", "0.9", "--amp", "bf16", "--label-smoothing", "0.1",
                 "--out", str(run)]) == 0
    spec = json.loads((run / "run.json").read_text())
    assert spec["classes"] == [0, 1, 7] and spec["pool_kwargs"] == {"negative": "softplus"}
    assert (spec["hflip"], spec["accum_steps"], spec["ema_decay"], spec["amp"]) == (
        0.0, 2, 0.9, "bf16")
    train = build_parser()._subparsers._group_actions[0].choices["vision"]
    options = train._subparsers._group_actions[0].choices["train"]._option_string_actions
    dests = {action.dest for action in options.values()}
    arch = {"img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio"}
    missing = {f.name for f in dataclasses.fields(RunSpec)} - dests - {"model_kwargs"}
    assert not missing and arch <= dests


def test_vision_train_logs_every_epoch_of_log_jsonl_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from _tensorboard import events

    from poolwise.cli import main

    run = tmp_path / "run"
    assert main(["vision", "train", "--epochs", "2", "--embed-dim", "24", "--depth", "1",
                 "--num-heads", "2", "--batch-size", "250", "--threads", "1",
                 "--log-to", "tensorboard", "--out", str(run)]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    found = events(run / "tensorboard")
    assert [step for step, _ in found["train_loss"]] == [r["epoch"] for r in log] == [1, 2]
    assert [v for _, v in found["train_loss"]] == pytest.approx([r["train_loss"] for r in log])
    assert [step for step, _ in found["p/1"]] == [1, 2]
