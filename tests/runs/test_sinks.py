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
    with pytest.raises(ValueError,
                       match=r"log sink 'visdom' is not one of tensorboard, mlflow, wandb"):
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


def _mlflow_store(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's file store, for the test
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "poolwise-test")


def test_mlflow_holds_one_finished_run_per_training_with_what_was_logged(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    _mlflow_store(monkeypatch, tmp_path)
    run = tmp_path / "loso"
    assert check_sinks(["mlflow"]) == ("mlflow",)  # creates the experiment
    for subject, losses in (("C01", (0.5, 0.25)), ("C02", (0.75, 0.5))):
        with epoch_sinks(["mlflow"], run, name=subject) as log:
            for epoch, loss in enumerate(losses, 1):
                log({"epoch": epoch, "loss": loss, "p": [3.0 + epoch], "note": "text"})
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("poolwise-test")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"loso/C01", "loso/C02"}
    first = runs["loso/C01"]
    assert first.info.status == "FINISHED"
    assert first.data.tags["poolwise.run_folder"] == str(run.resolve())
    history = client.get_metric_history(first.info.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.5), (2, 0.25)]
    assert [m.value for m in client.get_metric_history(first.info.run_id, "p/0")] == [4.0, 5.0]
    assert "note" not in first.data.metrics


def test_an_mlflow_store_that_cannot_be_reached_is_refused_before_work(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: refused
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(ValueError, match=r"--log-to mlflow: the tracking store "
                                         r"'http://127.0.0.1:9' cannot be used .*set "
                                         r"MLFLOW_TRACKING_URI"):
        check_sinks(["mlflow"])


def test_wandb_writes_an_offline_run_in_the_run_folder(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "train"
    assert check_sinks(["wandb"]) == ("wandb",)
    with Sinks(["wandb"], run) as out:
        out.log({"epoch": 1, "select_macro_f1": 0.5}, step=1)
        out.log({"epoch": 2, "select_macro_f1": 0.625}, step=2)
    files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    data = files[0].read_bytes()  # the records `wandb sync` uploads
    assert b"select_macro_f1" in data and b"0.625" in data


def test_wandb_without_credentials_online_is_refused_before_work(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with pytest.raises(ValueError, match=r"no W&B credentials .* WANDB_MODE=offline"):
        check_sinks(["wandb"])
