"""Log sinks: the numbers of a record, TensorBoard event files that hold exactly the epochs of
log.jsonl, and a clear refusal of an unknown or uninstalled sink."""

import pytest
from _tensorboard import events

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
