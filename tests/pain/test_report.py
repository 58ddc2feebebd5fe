"""The pain report (:mod:`poolwise.pain.loso.report`): runs merged from several array jobs,
both protocols side by side, intervals, plots and files."""

import json

from poolwise.pain.loso.records import load_run
from poolwise.pain.loso.report import write_report
from poolwise.pain.loso.run import LosoConfig, run_loso
from poolwise.pain.loso.summary import summarise_run
from poolwise.pain.train import TrainConfig


def _config(**kw):
    return LosoConfig("cnn_tap", train=TrainConfig(epochs=2, batch_size=32), **kw)


def test_report_merges_runs(cohort, tmp_path):
    run_loso(cohort, tmp_path / "clean", _config(), folds=["0-2"])
    run_loso(cohort, tmp_path / "clean", _config(), folds=["3-5"])  # another array job
    run_loso(cohort, tmp_path / "ref", _config(protocol="reference"), folds=["0-1"])
    summary = summarise_run(load_run(tmp_path / "clean"))
    assert summary["folds"] == 6 and summary["windows"] == len(cohort)
    per_subject = summary["per_subject_summary"]["macro_f1"]
    assert per_subject["n"] + per_subject["undefined"] == 6
    path = write_report([tmp_path], tmp_path / "report", command="poolwise pain report X")
    text = path.read_text()
    assert "cnn_tap [clean]" in text and "cnn_tap [REFERENCE (leaky)]" in text
    assert "Clean vs REFERENCE" in text and "nan" not in text.lower()
    ci = summary["pooled_ci"]["macro_f1"]
    assert ci["estimate"] == summary["pooled"]["macro_f1"] and ci["resamples"] == 1000
    assert ci["ci"][0] <= ci["ci"][1] and "bootstrap intervals" in text
    svg = (tmp_path / "report" / "per_subject_macro_f1.svg").read_text()
    for s in json.loads((tmp_path / "report" / "summary.json").read_text()):
        k = len(s["undefined_subjects"]["macro_f1"])
        assert (f"({k} undefined)" in svg) == (k > 0)  # counted, not dropped silently
    assert "![per_subject_macro_f1.png](per_subject_macro_f1.png)" in text
    for name in ("confusion_matrices.png", "per_subject_macro_f1.png", "summary.json",
                 "per_subject.csv"):
        assert (tmp_path / "report" / name).stat().st_size > 0
