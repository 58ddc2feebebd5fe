"""Log sinks: the numbers of a record, TensorBoard event files that hold exactly the epochs of
log.jsonl, and a clear refusal of an unknown or uninstalled sink."""

import json

import pytest

from poolwise.runs import sinks
from poolwise.runs.sinks import Sinks, check_sinks, epoch_sinks, scalars


def test_scalars_keeps_the_finite_numbers_and_numbers_list_entries():
    record = {"epoch": 2, "train_loss": 0.5, "p": [3.0, 2.5], "ok": True, "name": "x",
              "ema": {"accuracy": 0.75, "loss": None}, "bad": float("nan")}
    assert scalars(record) == {"epoch": 2.0, "train_loss": 0.5, "p/0": 3.0, "p/1": 2.5,
                               "ema/accuracy": 0.75}


def test_unknown_and_uninstalled_sinks_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="log sink 'visdom' is not one of tensorboard"):
        check_sinks(["visdom"])
    monkeypatch.setitem(sinks.SINKS, "fake", "no_such_package_for_poolwise")
    with pytest.raises(ValueError, match=r"--log-to fake needs the no_such_package_for_poolwise "
                                         r"package: pip install 'poolwise\[fake\]'"):
        check_sinks(["fake"])
    assert check_sinks([]) == ()


def events(folder):
    """{tag: [(step, value), ...]} of the TensorBoard event files in ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def test_tensorboard_holds_what_was_logged(tmp_path):
    pytest.importorskip("tensorboard")
    with Sinks(["tensorboard"], tmp_path, name="C01") as out:
        out.log({"epoch": 1, "loss": 0.5, "p": [3.0]}, step=1)
        out.log({"epoch": 2, "loss": 0.25, "p": [3.5]}, step=2)
    found = events(tmp_path / "tensorboard" / "C01")
    assert found["loss"] == [(1, 0.5), (2, 0.25)] and found["p/0"] == [(1, 3.0), (2, 3.5)]
    seen = []
    with epoch_sinks((), tmp_path, seen.append) as callback:
        assert callback == seen.append  # no sink: the callback itself


def test_vision_train_logs_every_epoch_of_log_jsonl_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
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


def test_a_loso_run_logs_each_fold_in_its_own_folder(tmp_path):
    pytest.importorskip("tensorboard")
    from _cohorts import small_cohort

    from poolwise.pain.loso import LosoConfig, run_loso
    from poolwise.pain.train import TrainConfig

    dataset = small_cohort(tmp_path / "cohort", n_subjects=4, seed=3, per_class=(10, 6))
    config = LosoConfig("cnn_tap", train=TrainConfig(epochs=2, batch_size=16),
                        n_select_subjects=2)
    records = run_loso(dataset, tmp_path / "run", config, log_to=["tensorboard"])
    for record in records:
        found = events(tmp_path / "run" / "tensorboard" / record["test_subject"])
        losses = [h["train_loss"] for h in record["history"]]
        assert [v for _, v in found["train_loss"]] == pytest.approx(losses)
