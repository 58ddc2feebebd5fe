"""The LOSO run (:mod:`poolwise.pain.loso.run`) on a tiny synthetic cohort: what a fold
records, fresh and reproducible folds, resume, the protocols' folds, processes, log sinks."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from _cohorts import small_cohort

from poolwise.pain import train as train_module
from poolwise.pain.deploy.detector import Detector
from poolwise.pain.loso import run as loso_module
from poolwise.pain.loso.run import (
    LosoConfig,
    fold_seed,
    run_loso,
)
from poolwise.pain.train import TrainConfig


def _config(**kw):
    return LosoConfig("cnn_tap", train=TrainConfig(epochs=2, batch_size=32), **kw)


def test_clean_protocol_records_and_keeps_the_test_subject_out(cohort, tmp_path):
    records = run_loso(cohort, tmp_path, _config(), folds=["P01", "C01"])
    assert [r["test_subject"] for r in records] == ["P01", "C01"]
    for r in records:
        s = r["test_subject"]
        assert s not in r["train_subjects"] and s not in r["val_subjects"]
        assert set(r["val_subjects"]) <= set(r["train_subjects"])
        assert set(r["normalisation"]["fitted_on"]) == set(r["train_subjects"]) - set(
            r["val_subjects"]
        )
        fit = np.isin(cohort.subject, r["normalisation"]["fitted_on"])
        expected_mean = cohort.X[fit].mean(axis=(0, 2))
        assert np.allclose(r["normalisation"]["mean"], expected_mean, rtol=1e-4, atol=1e-4)
        n = int((cohort.subject == s).sum())
        assert len(r["test"]["probabilities"]) == n == len(r["test"]["labels"])
        assert r["test"]["labels"] == cohort.y[cohort.subject == s].tolist()
        assert r["seed"] == fold_seed(0, s) and 1 <= r["epoch_chosen"] <= 2
        assert r["environment"]["torch_threads"] == torch.get_num_threads()
        assert json.loads((tmp_path / f"fold_{s}.json").read_text()) == r
        # the fold weights are a complete detector: raw windows in, the same probabilities out
        detector = Detector.load(tmp_path / f"fold_{s}.safetensors")
        assert detector.config.channel_names == cohort.channel_names
        assert (detector.config.frame_rate, detector.config.hop) == (cohort.frame_rate,
                                                                     cohort.step)
        assert detector.threshold == r["threshold"]["value"]
        raw = cohort.X[r["test"]["window_index"]]
        assert detector.predict_proba(raw) == pytest.approx(r["test"]["probabilities"],
                                                            abs=1e-5)
    assert not list(tmp_path.glob(".*tmp"))


def test_folds_are_fresh_and_reproducible(cohort, tmp_path):
    a = run_loso(cohort, tmp_path / "a", _config(), folds=["P02"])[0]
    b = run_loso(cohort, tmp_path / "b", _config(), folds=["P02"])[0]
    assert a["test"]["probabilities"] == pytest.approx(b["test"]["probabilities"], abs=1e-6)


def test_killed_run_resumes_without_losing_folds(cohort, tmp_path, monkeypatch):
    real = loso_module.run_fold
    calls = []

    def dies_on_third(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loso_module, "run_fold", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_loso(cohort, tmp_path, _config(), folds=["0-3"])
    done = sorted(p.name for p in tmp_path.glob("fold_*.json"))
    assert done == ["fold_C01.json", "fold_C02.json"]
    before = {name: (tmp_path / name).read_text() for name in done}
    monkeypatch.setattr(loso_module, "run_fold", real)
    seen = []
    records = run_loso(cohort, tmp_path, _config(), folds=["0-3"],
                       on_fold=lambda r, resumed: seen.append((r["test_subject"], resumed)))
    assert seen == [("C01", True), ("C02", True), ("P01", False), ("P02", False)]
    assert {name: (tmp_path / name).read_text() for name in done} == before
    assert len(records) == 4


def test_run_folder_refuses_another_configuration(cohort, tmp_path):
    run_loso(cohort, tmp_path, _config(), folds=["C01"])
    with pytest.raises(ValueError, match=r"other settings \(model"):
        run_loso(cohort, tmp_path, LosoConfig("lsfan", train=TrainConfig(epochs=2)), folds=["0"])


def test_reference_protocol_leaks_as_documented(cohort, tmp_path, monkeypatch):
    config = _config(protocol="reference")
    with pytest.raises(ValueError, match="run that first"):
        run_loso(cohort, tmp_path, config, folds=["C02"])
    starts = []
    real_fit = train_module.fit

    def recording_fit(model, *args, **kwargs):
        starts.append({k: v.clone() for k, v in model.cnn.state_dict().items()})
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(train_module, "fit", recording_fit)  # what every fold's fit calls
    first, second = run_loso(cohort, tmp_path, config, folds=["0-1"])
    assert "REFERENCE" in first["protocol_note"]
    assert second["val_subjects"] == [second["test_subject"]]  # the held-out picks the epoch
    assert second["cnn_chained_from"] == first["test_subject"]
    assert len(second["test"]["labels"]) == 7 * int((cohort.subject == "C02").sum())
    # global statistics over every subject's augmented windows
    assert first["normalisation"]["mean"] == second["normalisation"]["mean"]
    # the second fold's CNN starts where the first fold's last epoch ended
    from safetensors.torch import load_file

    chain = load_file(str(tmp_path / "reference_cnn_chain" / "after_C01.safetensors"))
    assert chain.keys() == {f"cnn.{k}" for k in starts[1]}
    assert all(torch.equal(chain[f"cnn.{k}"], v) for k, v in starts[1].items())
    assert not all(torch.equal(starts[0][k], v) for k, v in starts[1].items())
    assert "REFERENCE" in json.loads((tmp_path / "run.json").read_text())["protocol_note"]


def test_jobs_run_folds_in_processes(cohort, tmp_path):
    records = run_loso(cohort, tmp_path, _config(), folds=["0-1"], jobs=2)
    assert [r["test_subject"] for r in records] == ["C01", "C02"]
    with pytest.raises(ValueError, match="jobs=1"):
        run_loso(cohort, tmp_path / "r", _config(protocol="reference"), jobs=2)


def test_a_loso_run_logs_each_fold_in_its_own_folder(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from _tensorboard import events

    from poolwise.pain.loso.run import LosoConfig, run_loso
    from poolwise.pain.train import TrainConfig

    dataset = small_cohort(tmp_path / "cohort", n_subjects=4, seed=3, per_class=(10, 6))
    config = LosoConfig("cnn_tap", train=TrainConfig(epochs=2, batch_size=16),
                        n_select_subjects=2)
    mlflow = importlib.util.find_spec("mlflow") is not None  # also MLflow where installed
    if mlflow:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    records = run_loso(dataset, tmp_path / "run", config,
                       log_to=["tensorboard", *(["mlflow"] if mlflow else [])])
    for record in records:
        found = events(tmp_path / "run" / "tensorboard" / record["test_subject"])
        losses = [h["train_loss"] for h in record["history"]]
        assert [v for _, v in found["train_loss"]] == pytest.approx(losses)
    if mlflow:
        from mlflow import MlflowClient

        client = MlflowClient()
        runs = client.search_runs([client.get_experiment_by_name("poolwise").experiment_id])
        by_name = {r.info.run_name: r.info.run_id for r in runs}
        assert set(by_name) == {f"run/{r['test_subject']}" for r in records}
        for record in records:
            logged = client.get_metric_history(by_name[f"run/{record['test_subject']}"],
                                               "train_loss")
            assert [m.value for m in sorted(logged, key=lambda m: m.step)] == pytest.approx(
                [h["train_loss"] for h in record["history"]])
