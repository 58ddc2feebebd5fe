"""Classification runs (:mod:`poolwise.vision.train.classification`): results, resume to the
same bytes, the run folder's lock and checks, metric-learning losses, damaged checkpoints."""

import hashlib
import json

import pytest
import torch
from _tiny_vit import tiny_spec
from safetensors.torch import load_file

from poolwise.vision.train.classification import load_trained, run_classification


class Interrupt(Exception):
    pass


def test_run_writes_results_and_resumes_to_the_same_weights(tmp_path):
    torch.set_num_threads(1)
    straight = run_classification(tiny_spec(), tmp_path / "straight")
    assert straight["accuracy"] > 0.6  # 3 easy classes: T-shirt, trouser, sneaker
    assert set(straight["retrieval"]) >= {"recall@1", "map@r", "r_precision"}
    assert 0 <= straight["dependence"] <= 1 and len(straight["p"]) == 2
    assert straight["p"] != [3.0, 3.0]  # p was trained
    log = (tmp_path / "straight" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2]

    def stop_after_first(record):
        raise Interrupt

    with pytest.raises(Interrupt):
        run_classification(tiny_spec(), tmp_path / "resumed", on_epoch=stop_after_first)
    assert not (tmp_path / "resumed" / "result.json").exists()
    assert len((tmp_path / "resumed" / "log.jsonl").read_text().splitlines()) == 1
    # a kill between the checkpoint's write and the log's leaves the log an epoch behind;
    # resuming rewrites it from the checkpoint's history
    (tmp_path / "resumed" / "log.jsonl").write_text("")
    resumed = run_classification(tiny_spec(), tmp_path / "resumed")
    log = (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2]
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["accuracy"] == straight["accuracy"]

    again = run_classification(tiny_spec(), tmp_path / "straight")  # finished: read back
    assert again == json.loads((tmp_path / "straight" / "result.json").read_text())
    with pytest.raises(ValueError, match="other settings \\(lr\\)"):
        run_classification(tiny_spec(lr=1e-2), tmp_path / "straight")
    model, spec = load_trained(tmp_path / "straight")
    assert spec.pool == "ggem" and model.p_values() == pytest.approx(straight["p"])


def test_a_locked_run_folder_refuses_and_stale_temporaries_go(tmp_path):
    from poolwise._io import FolderBusyError, lock_folder

    stale = tmp_path / ".checkpoint.pt.0123456789abcdef.tmp"  # left by a killed run
    stale.write_bytes(b"half a checkpoint")
    with lock_folder(tmp_path), pytest.raises(FolderBusyError, match="in use by another"):
        run_classification(tiny_spec(epochs=1), tmp_path)
    assert stale.exists() and not (tmp_path / "run.json").exists()
    run_classification(tiny_spec(epochs=1), tmp_path)
    assert not stale.exists() and (tmp_path / "result.json").is_file()


def test_a_finished_run_whose_weights_changed_finishes_again_from_its_checkpoint(tmp_path):
    first = run_classification(tiny_spec(epochs=1), tmp_path)
    weights = tmp_path / "model.safetensors"
    original = weights.read_bytes()
    assert first["weights"] == {"file": "model.safetensors",
                                "sha256": hashlib.sha256(original).hexdigest()}
    assert run_classification(tiny_spec(epochs=1), tmp_path) == first  # finished: read back
    weights.write_bytes(original[:-100])  # truncated after the run
    again = run_classification(tiny_spec(epochs=1), tmp_path)
    assert weights.read_bytes() == original and again["weights"] == first["weights"]


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_the_full_recipe_resumes_bit_identically(tmp_path, amp):
    """Mixup/CutMix, label smoothing, drop path, layer decay, accumulation, clipping, EMA and
    AMP (fp16: with the gradient scaler checkpointed): an interrupted run ends with the same
    weights, EMA weights and scaler as an uninterrupted one."""
    torch.set_num_threads(1)
    spec = tiny_spec(epochs=3, batch_size=32, accum_steps=2, mixup=0.8, cutmix=1.0,
                     label_smoothing=0.1, drop_path=0.1, layer_decay=0.75, clip_grad=1.0,
                     ema_decay=0.9, amp=amp, warmup_epochs=0.5, min_lr=1e-5)
    straight = run_classification(spec, tmp_path / "straight")
    assert "ema" in straight and 0 <= straight["ema"]["accuracy"] <= 1
    history = straight["history"]
    assert all("ema_test_accuracy" in h for h in history)
    assert history[0]["lr"] > history[-1]["lr"]  # the scheduler ran per step

    def stop(record):
        if record["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_classification(spec, tmp_path / "resumed", on_epoch=stop)
    state = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["trainer"]
    assert state["updates"] > 0 and state["ema"] is not None and "scheduler" in state
    if amp == "fp16":
        assert state["scaler"]["scale"] > 0  # the scaler's state travels with the run
    run_classification(spec, tmp_path / "resumed")
    for name in ("model.safetensors", "model_ema.safetensors"):
        a = load_file(str(tmp_path / "straight" / name))
        b = load_file(str(tmp_path / "resumed" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.slow
def test_compiled_channels_last_training_matches_the_recipe_contract(tmp_path):
    """--compile and --channels-last train through torch.compile (the GGeM kernel runs as
    itself inside the compiled model) and give a run like any other."""
    result = run_classification(tiny_spec(epochs=1, compile=True, channels_last=True),
                                tmp_path / "run")
    assert result["accuracy"] > 0.5 and len(result["p"]) == 2


@pytest.mark.parametrize("loss", ["multi_similarity", "proxy_anchor"])
def test_metric_learning_losses_train_an_embedding_and_resume(tmp_path, loss):
    pytest.importorskip("pytorch_metric_learning")
    torch.set_num_threads(1)
    spec = tiny_spec(classes=None, loss=loss, epochs=2, batch_size=40, m_per_class=4,
                     lr=2e-3)
    result = run_classification(spec, tmp_path / "run")
    # an untrained classifier says nothing: accuracy is not reported, retrieval is
    assert result["accuracy"] is None and result["loss"] is None
    assert result["retrieval"]["recall@1"] > 0.3  # 10 classes: chance 0.1
    assert "test_recall@1" in result["history"][0] and "test_accuracy" not in result["history"][0]
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    if loss == "proxy_anchor":  # the proxies train (own group, lr x100) and are checkpointed
        proxies = state["trainer"]["criterion"]["proxies"]
        assert proxies.shape == (10, 24)
        groups = state["trainer"]["optimizer"]["param_groups"]
        assert groups[-1]["lr_scale"] == 100.0 and groups[-1]["weight_decay"] == 0.0
    else:
        assert state["trainer"]["criterion"] == {}
    # a finished run returns its result; a spec with mixup is refused before training
    assert run_classification(spec, tmp_path / "run")["retrieval"] == result["retrieval"]
    with pytest.raises(ValueError, match="takes hard labels: drop --mixup"):
        run_classification(tiny_spec(loss=loss, mixup=0.8), tmp_path / "mix")
    with pytest.raises(ValueError, match="must be a multiple of --m-per-class 4"):
        run_classification(tiny_spec(classes=None, loss=loss, batch_size=42), tmp_path / "b")


@pytest.mark.parametrize("keep", [lambda n: 1000, lambda n: n // 3])  # the reader fails apart
def test_a_damaged_checkpoint_at_resume_is_named(tmp_path, keep):
    run_classification(tiny_spec(epochs=1), tmp_path)
    (tmp_path / "result.json").unlink()  # as if killed after the last checkpoint
    checkpoint = tmp_path / "checkpoint.pt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[:keep(len(data))])
    with pytest.raises(ValueError, match=f"{checkpoint}: a damaged or foreign checkpoint .*; "
                                         "delete it to train this run from its first epoch"):
        run_classification(tiny_spec(epochs=1), tmp_path)
