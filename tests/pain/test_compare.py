"""`pain compare`: each run is the `pain loso` run of the same options, byte for byte; one report
holds them all, seeds labelled; bad lists are refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _cohorts import small_cohort

from poolwise.cli import main
from poolwise.pain.loso.compare import compare_runs
from poolwise.pain.loso.config import LosoConfig

OPTIONS = ["--epochs", "1", "--batch-size", "16", "--select-subjects", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    dataset = small_cohort(root / "cohort", n_subjects=4, seed=3, per_class=(10, 6))
    return dataset.save(root / "small.npz")


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ("log.jsonl", ".poolwise.lock")}


def test_each_run_is_the_loso_run_and_one_report_holds_them(cohort, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["pain", "compare", str(cohort), "--models", "cnn_tap,gru", "--reference",
                 "cnn_tap", *OPTIONS, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 runs (cnn_tap-clean, gru-clean, cnn_tap-reference) of 4 subjects" in printed
    assert main(["pain", "loso", str(cohort), "--model", "gru", *OPTIONS,
                 "--out", str(tmp_path / "gru")]) == 0
    assert files(out / "gru-clean") == files(tmp_path / "gru")
    report = (out / "report.md").read_text()
    for label in ("cnn_tap [clean]", "gru [clean]", "cnn_tap [REFERENCE (leaky)]"):
        assert f"| {label} |" in report
    assert "Made with:" in report
    # where the folds ran, from their records: CPU, cores, versions, threads, wall time
    import torch

    from poolwise._machine import cpu_name

    assert (f"Machine and versions: {cpu_name()} (" in report
            and f"torch {torch.__version__} with " in report and "wall time from" in report)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary) == 3
    # a second call resumes every fold and writes the same report, here apart from the runs
    assert main(["pain", "compare", str(cohort), "--models", "cnn_tap,gru", "--reference",
                 "cnn_tap", *OPTIONS, "--out", str(out), "--report",
                 str(tmp_path / "published")]) == 0
    assert "done earlier" in capsys.readouterr().out
    assert "| gru [clean] |" in (tmp_path / "published" / "report.md").read_text()


def test_seeds_are_runs_of_their_own_labelled_by_seed(cohort, tmp_path):
    out = tmp_path / "cmp"
    assert main(["pain", "compare", str(cohort), "--models", "cnn_tap", "--seeds", "2",
                 "--seed", "5", *OPTIONS, "--out", str(out)]) == 0
    seeds = [json.loads((out / f"cnn_tap-clean-seed{k}" / "run.json").read_text())["seed"]
             for k in (0, 1)]
    assert seeds == [5, 6]
    report = (out / "report.md").read_text()
    assert "| cnn_tap seed 5 [clean] |" in report and "| cnn_tap seed 6 [clean] |" in report


def test_bad_lists_are_refused_before_any_work(cohort, tmp_path, capsys):
    out = tmp_path / "cmp"
    with pytest.raises(SystemExit):
        main(["pain", "compare", str(cohort), "--models", "cnn_tap,resnet", "--out", str(out)])
    assert "unknown model(s) resnet; known: " in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pain", "compare", str(cohort), "--models", "gru,gru", "--out", str(out)])
    assert "model(s) gru named more than once" in capsys.readouterr().err
    base = LosoConfig(model="lsfan")
    with pytest.raises(ValueError, match="--models names gru twice"):
        compare_runs(base, ["gru", "gru"])
    with pytest.raises(ValueError, match="seeds must be a positive number"):
        compare_runs(base, ["lsfan"], 0)
    assert not out.exists()
