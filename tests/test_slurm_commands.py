"""The grid commands with ``--launcher slurm`` on the real one-node cluster of the ``slurm``
fixture: the same bytes as the same run on this machine, ``--no-wait`` then a second call, and
the checks made before anything is submitted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _cohorts import small_cohort

from poolwise.cli import main
from poolwise.pain.data.readers import load_dataset

SLURM = ["--launcher", "slurm", "--slurm-cpus", "1", "--slurm-time", "10"]


def files(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every result file of a run folder (not the log, the lock or submitit's folder)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ("log.jsonl", ".poolwise.lock", *skip)
            and "slurm" not in p.relative_to(folder).parts}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    dataset = small_cohort(root / "cohort", n_subjects=4, seed=5, per_class=(10, 6))
    return dataset.save(root / "small.npz")


def loso(data: Path, out: Path, *extra: str) -> list[str]:
    return ["pain", "loso", str(data), "--model", "cnn_tap", "--epochs", "1", "--batch-size",
            "16", "--select-subjects", "2", "--threads", "1", "--out", str(out), *extra]


def test_pain_loso_on_slurm_no_wait_then_collect_gives_the_local_bytes(cluster, cohort,
                                                                       tmp_path, capsys):
    assert main(loso(cohort, tmp_path / "local", "--jobs", "2")) == 0
    capsys.readouterr()
    assert main(loso(cohort, tmp_path / "slurm", *SLURM, "--no-wait")) == 0
    out = capsys.readouterr().out
    assert "SLURM: one job per cell (partition (default), 10 min, 1 CPU, 0 GPU" in out
    assert "4 cell(s) queued or running, 0 finished; SLURM jobs: " in out
    cells = json.loads((tmp_path / "slurm" / "slurm" / "cells.json").read_text())
    assert sorted(cells) == sorted(load_dataset(cohort).subjects)
    assert main(loso(cohort, tmp_path / "slurm", *SLURM)) == 0
    assert "4 fold files in" in capsys.readouterr().out
    local, remote = files(tmp_path / "local"), files(tmp_path / "slurm")
    assert len(local) >= 9 and remote == local  # run.json, 4 folds' weights and records
    # nothing was submitted again
    assert json.loads((tmp_path / "slurm" / "slurm" / "cells.json").read_text()) == cells


def test_vision_compare_on_slurm_gives_the_local_weights_and_metrics(cluster, tmp_path, capsys):
    args = ["vision", "compare", "--preset", "tiny28", "--embed-dim", "24", "--depth", "1",
            "--num-heads", "2", "--classes", "0,1,7", "--epochs", "1", "--pools", "avg,ggem",
            "--seeds", "1", "--threads", "1"]
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--out", str(tmp_path / "slurm"), *SLURM, "--slurm-gpus", "0"]) == 0
    timing = ("train_seconds", "seconds", "images_per_s")
    for cell in ("avg-seed0", "ggem-seed0"):
        local, remote = tmp_path / "local" / cell, tmp_path / "slurm" / cell
        skip = ("result.json", "run.json", "checkpoint.pt")  # these hold wall times and paths
        assert (remote / "model.safetensors").is_file()
        assert files(local, skip) == files(remote, skip)
        a, b = (json.loads((d / "result.json").read_text()) for d in (local, remote))
        assert {k: v for k, v in a.items() if k not in timing and k != "history"} == \
            {k: v for k, v in b.items() if k not in timing and k != "history"}
    local_table = (tmp_path / "local" / "compare.csv").read_text().splitlines()
    remote_table = (tmp_path / "slurm" / "compare.csv").read_text().splitlines()
    assert local_table[0] == remote_table[0] and len(remote_table) == 3


def test_checks_before_submission(cluster, cohort, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(loso(cohort, out, *SLURM, "--slurm-partition", "gpu-a100")) == 2
    assert "'gpu-a100' is not a partition of this cluster (sinfo lists: debug)" in \
        capsys.readouterr().err
    assert main(loso(cohort, out, *SLURM, "--jobs", "2")) == 2
    assert "--jobs is for the local launcher" in capsys.readouterr().err
    assert main(loso(cohort, out, "--slurm-time", "5")) == 2
    assert "--slurm-time go(es) with --launcher slurm" in capsys.readouterr().err
    assert main(loso(cohort, out, *SLURM, "--protocol", "reference")) == 2
    assert "the reference protocol chains folds in order" in capsys.readouterr().err
    config = tmp_path / "slurm.toml"
    config.write_text('partition = "debug"\nwall_time = 5\n')
    assert main(loso(cohort, out, *SLURM, "--slurm-config", str(config))) == 2
    assert f"{config}: unknown key(s) wall_time" in capsys.readouterr().err
    assert not (out / "slurm").exists()  # nothing was submitted


def test_no_slurm_on_the_machine_is_one_line(monkeypatch, cohort, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, squeue or scontrol
    assert main(loso(cohort, tmp_path / "run", "--launcher", "slurm")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["poolwise: error: --launcher slurm: no `sbatch` on this machine; run on a "
                   "SLURM login node (or use --launcher local)"]


def test_pain_compare_on_slurm_submits_every_run_and_gives_the_local_bytes(cluster, cohort,
                                                                          tmp_path, capsys):
    args = ["pain", "compare", str(cohort), "--models", "cnn_tap,gru", "--reference", "cnn_tap",
            "--epochs", "1", "--batch-size", "16", "--select-subjects", "2", "--threads", "1"]
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--out", str(tmp_path / "slurm"), *SLURM, "--no-wait"]) == 0
    printed = capsys.readouterr().out
    assert "8 cell(s) queued or running, 0 finished" in printed  # both clean runs at once
    assert not (tmp_path / "slurm" / "cnn_tap-reference").exists()  # runs here, later
    assert main([*args, "--out", str(tmp_path / "slurm"), *SLURM]) == 0
    for run in ("cnn_tap-clean", "gru-clean", "cnn_tap-reference"):
        assert files(tmp_path / "slurm" / run) == files(tmp_path / "local" / run)
    assert _untimed(tmp_path / "slurm" / "report.md") == _untimed(tmp_path / "local" / "report.md")


def _untimed(report) -> str:
    """A report without what depends on when and where it ran: the line on the machine and
    the wall time, and the fold time column."""
    text = "\n".join(line for line in report.read_text().splitlines()
                     if not line.startswith("Machine and versions:"))
    return re.sub(r"\| (\d+ min )?\d+(\.\d+)? s \|", "| (time) |", text)


def _rows(path: Path) -> list[dict]:
    """A comparison's table rows without the wall times."""
    return [{k: v for k, v in row.items() if "second" not in k}
            for row in json.loads(path.read_text())["rows"]]


def test_probe_on_slurm_gives_the_local_numbers(cluster, tmp_path, capsys):
    """Each probe head is a cell; the tokens they share come from a backbone whose random
    weights are seeded, so two runs in two folders (or on two machines) agree. clip-compare runs
    its cells through the same grid as vision compare (tested above)."""
    args = ["vision", "probe", "--model", "vit_tiny_patch16_224", "--patch-size", "7",
            "--embed-dim", "24", "--depth", "1", "--num-heads", "2", "--pools", "avg,ggem",
            "--seeds", "1", "--epochs", "3", "--threads", "1"]
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--out", str(tmp_path / "slurm"), *SLURM, "--slurm-gpus", "0"]) == 0
    assert "SLURM: one job per cell" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "slurm" / "slurm" / "cells.json").read_text())) == 2
    assert _rows(tmp_path / "slurm" / "probe.json") == _rows(tmp_path / "local" / "probe.json")
