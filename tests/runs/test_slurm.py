"""The SLURM executor against a real single-node SLURM cluster (the ``slurm`` fixture starts
munged, slurmctld and slurmd on this machine; skipped where SLURM is not installed)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from poolwise.runs import Cell, Grid, InProcess
from poolwise.runs.slurm import (
    GridFailed,
    SlurmExecutor,
    SlurmOptions,
    Submitted,
    check_partition,
    node_local,
)

TINY = SlurmOptions(cpus_per_task=1, gpus_per_task=0, time_min=10)


def test_a_grid_gives_the_same_results_as_in_process_and_reports_a_failed_cell(cluster, tmp_path):
    import _slurm_cells

    grid = Grid(_slurm_cells.scaled, {"factor": 3}, [Cell(f"v{v}", (v,)) for v in (1, -1, 2)])
    statuses = []
    executor = SlurmExecutor(tmp_path / "jobs", TINY, poll_s=0.3, on_status=statuses.append)
    with pytest.raises(GridFailed) as failed:
        executor.run(grid)
    assert list(failed.value.failed) == ["v-1"]
    text = failed.value.failed["v-1"]
    jobs = json.loads((tmp_path / "jobs" / "cells.json").read_text())
    log = executor.log_path(jobs["v-1"])
    assert text == (f"job {jobs['v-1']}: FAILED (ValueError: cell value -1 is negative); "
                    f"log {log}")
    assert "cell value -1 is negative" in log.read_text()
    assert "2 finished" in str(failed.value) and statuses[-1]["done"] == 2

    # a second call takes the finished cells from their results and resubmits only the failed
    good = Grid(_slurm_cells.scaled, {"factor": 3}, [Cell(f"v{v}", (v,)) for v in (1, 2)])
    results = executor.run(good)
    local = InProcess().run(good)
    assert {k: v["value"] for k, v in results.items()} == {k: v["value"] for k, v in local.items()}
    assert results["v1"] == {"value": 3, "threads": 1}  # the element's CPUs
    assert json.loads((tmp_path / "jobs" / "cells.json").read_text()) == jobs


def test_no_wait_queues_and_a_second_call_collects(cluster, tmp_path):
    import _slurm_cells

    grid = Grid(_slurm_cells.scaled, {"factor": 5}, [Cell(f"v{v}", (v,)) for v in (1, 2, 3)])
    with pytest.raises(Submitted) as queued:
        SlurmExecutor(tmp_path / "jobs", TINY, wait=False).run(grid)
    assert sorted(queued.value.jobs) == ["v1", "v2", "v3"]
    results = SlurmExecutor(tmp_path / "jobs", TINY, poll_s=0.3).run(grid)
    assert {k: v["value"] for k, v in results.items()} == {"v1": 5, "v2": 10, "v3": 15}
    assert json.loads((tmp_path / "jobs" / "cells.json").read_text()) == queued.value.jobs


def test_a_cancelled_cell_is_named_and_a_rerun_finishes_the_grid(cluster, tmp_path):
    import _slurm_cells

    grid = Grid(_slurm_cells.attempts, {"folder": str(tmp_path)}, [Cell("a", ("a",))])
    executor = SlurmExecutor(tmp_path / "jobs", TINY, poll_s=0.3, wait=False)
    with pytest.raises(Submitted) as queued:
        executor.run(grid)
    job = queued.value.jobs["a"]
    while not (tmp_path / "a.started").exists():
        time.sleep(0.2)
    cluster.run("scancel", job)
    executor.wait = True
    with pytest.raises(GridFailed, match=f"a: job {job}: CANCELLED"):
        executor.run(grid)
    assert executor.run(grid) == {"a": {"name": "a", "attempts": 2}}


def test_the_warning_signal_requeues_a_cell_that_then_finishes(cluster, tmp_path):
    import _slurm_cells

    grid = Grid(_slurm_cells.attempts, {"folder": str(tmp_path)}, [Cell("b", ("b",))])
    executor = SlurmExecutor(tmp_path / "jobs", TINY, poll_s=0.3, wait=False)
    with pytest.raises(Submitted) as queued:
        executor.run(grid)
    job = queued.value.jobs["b"]
    while not (tmp_path / "b.started").exists():
        time.sleep(0.2)
    time.sleep(1.0)  # submitit's signal handler is installed before the function starts
    cluster.warn(job)
    executor.wait = True
    assert executor.run(grid) == {"b": {"name": "b", "attempts": 2}}
    assert json.loads((tmp_path / "jobs" / "cells.json").read_text()) == {"b": job}


def test_options_and_checks_before_submission(cluster, tmp_path):
    assert TINY.submitit_parameters() == {
        "time": 10, "cpus_per_task": 1, "nodes": 1, "ntasks_per_node": 1,
        "array_parallelism": 256, "signal_delay_s": 120}
    params = SlurmOptions(partition="gpu", gpus_per_task=2, mem_gb=1.5, qos="high",
                          extra={"mail-type": "END"}).submitit_parameters()
    assert (params["partition"], params["gpus_per_node"], params["mem"], params["qos"],
            params["additional_parameters"]) == ("gpu", 2, "1536MB", "high", {"mail-type": "END"})
    for bad in ({"time_min": 0}, {"cpus_per_task": -1}, {"gpus_per_task": -1}, {"mem_gb": 0}):
        with pytest.raises(ValueError, match="slurm option"):
            SlurmOptions(**bad)
    check_partition("debug")
    with pytest.raises(ValueError, match=r"'gpu-a100' is not a partition of this cluster "
                                         r"\(sinfo lists: debug\)"):
        check_partition("gpu-a100")
    assert node_local(Path("/tmp/x")) and not node_local(Path("/work/x"))


def test_a_job_that_saved_nothing_by_its_time_limit_is_not_requeued(tmp_path, capsys):
    """submitit asks the cell whether to requeue; a cell that reached its time limit without
    finishing an item or an epoch says why in its log and is not requeued (a requeue would
    redo the same work); one that saved something, or was warned early (preemption), is."""
    pytest.importorskip("submitit")
    from submitit.helpers import DelayedSubmission

    from poolwise.runs.folder import RunFolder, progress
    from poolwise.runs.slurm import SlurmCell

    cell = SlurmCell(print, str(tmp_path / "shared.pkl"), (), 1, time_min=20)
    cell.progress_at_start = progress()
    cell.started = time.time() - 19 * 60  # 80 % of 20 min is 16 min: timed out
    assert cell.checkpoint() is None
    assert "time limit (20 min) without finishing one epoch or item" in capsys.readouterr().err
    cell.started = time.time() - 5 * 60  # warned long before the limit: preempted
    assert isinstance(cell.checkpoint(), DelayedSubmission)
    cell.started = time.time() - 19 * 60
    RunFolder(tmp_path, what="run").finish("a", {"done": True})  # an item saved
    requeued = cell.checkpoint()
    assert isinstance(requeued, DelayedSubmission) and requeued.function.time_min == 20
