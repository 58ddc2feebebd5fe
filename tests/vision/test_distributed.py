"""The engine's DDP (:mod:`poolwise.vision.train.engine`) across processes: under torchrun, as
a two-task SLURM job, and requeued by SLURM's warning signal."""

import json
import os
import subprocess
import sys
import time

import pytest

DDP_ARGS = ["vision", "train", "--epochs", "1", "--embed-dim", "24", "--depth", "1",
            "--num-heads", "2", "--batch-size", "128"]


@pytest.fixture(scope="module")
def torchrun_run(tmp_path_factory):
    """DDP on CPU (gloo): the same CLI command, two processes under torchrun, one run folder."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path_factory.mktemp("torchrun") / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29533", "-m", "poolwise", *DDP_ARGS, "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


@pytest.mark.slow
def test_cli_train_under_torchrun_two_processes(torchrun_run):
    out, done = torchrun_run
    result = json.loads((out / "result.json").read_text())
    assert result["n"] == 1000 and len(result["history"]) == 1
    assert "test accuracy" in done.stdout


@pytest.mark.slow
def test_cli_train_on_slurm_two_tasks_gives_the_torchrun_weights(cluster, torchrun_run,
                                                                 tmp_path, capsys):
    """``--launcher slurm`` with two CPU tasks on one node: rank, world size and rendezvous
    from SLURM's environment, DDP over gloo, the same weights as under torchrun."""
    from poolwise.cli import main

    out = tmp_path / "ddp"
    assert main([*DDP_ARGS, "--out", str(out), "--launcher", "slurm", "--gpus-per-node", "0",
                 "--tasks-per-node", "2", "--slurm-cpus", "1", "--slurm-time", "10"]) == 0
    printed = capsys.readouterr().out
    assert "SLURM: one job (partition (default), 10 min, 1 node(s) x 2 task(s) of 1 CPU and " \
           "0 GPU" in printed and "test accuracy" in printed
    reference = torchrun_run[0]
    assert (out / "model.safetensors").read_bytes() == \
        (reference / "model.safetensors").read_bytes()
    a, b = (json.loads((d / "result.json").read_text()) for d in (out, reference))
    assert a["accuracy"] == b["accuracy"] and a["p"] == b["p"]


@pytest.mark.slow
def test_a_training_job_warned_by_slurm_requeues_and_ends_with_the_uninterrupted_weights(
        cluster, tmp_path, capsys):
    """SLURM's warning signal mid-run: the job requeues itself (submitit's checkpoint protocol)
    and resumes from its run folder's last epoch to the weights of a run never interrupted."""
    from poolwise.cli import main

    args = [*DDP_ARGS[:3], "4", *DDP_ARGS[4:]]  # 4 epochs
    assert main([*args, "--threads", "1", "--out", str(tmp_path / "local")]) == 0
    slurm = [*args, "--out", str(tmp_path / "slurm"), "--launcher", "slurm", "--gpus-per-node",
             "0", "--slurm-cpus", "1", "--slurm-time", "10"]
    assert main([*slurm, "--no-wait"]) == 0
    job = json.loads((tmp_path / "slurm" / "slurm" / "cells.json").read_text())["train"]
    history = tmp_path / "slurm" / "log.jsonl"
    while not (history.is_file() and history.read_text().count("\n") >= 1):
        time.sleep(0.1)  # the first epoch is checkpointed
    cluster.warn(job)
    capsys.readouterr()
    assert main(slurm) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert (tmp_path / "slurm" / "model.safetensors").read_bytes() == \
        (tmp_path / "local" / "model.safetensors").read_bytes()
    log = [json.loads(line) for line in history.read_text().splitlines()]
    assert [r["epoch"] for r in log if "epoch" in r] == [1, 2, 3, 4]
