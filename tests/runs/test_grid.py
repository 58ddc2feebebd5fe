"""Grids of independent cells and the local executors."""

from __future__ import annotations

import os

import pytest

from poolwise.runs import Cell, Grid, InProcess, LocalPool, local_executor, ordered


def scaled(shared: dict, value: int, on_value=None) -> dict:
    if on_value is not None:
        on_value(value)
    if value < 0:
        raise ValueError(f"cell value {value} is negative")
    import torch

    return {"value": value * shared["factor"], "pid": os.getpid(),
            "threads": torch.get_num_threads(), "shared_id": id(shared)}


def waits_for(shared: dict, name: str) -> str:
    """Returns once ``<folder>/<name>.go`` exists (or after 60 s)."""
    import time
    from pathlib import Path

    go = Path(shared["folder"]) / f"{name}.go"
    deadline = time.monotonic() + 60
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return name


def grid_of(*values: int, factor: int = 3) -> Grid:
    return Grid(scaled, {"factor": factor}, [Cell(f"v{v}", (v,)) for v in values])


def test_in_process_runs_cells_in_order_with_live_callbacks():
    grid = grid_of(1, 2, 3)
    seen, finished = [], []
    results = InProcess().run(grid, on_result=lambda c, r: finished.append(c.name),
                              live=lambda cell: {"on_value": seen.append})
    assert [r["value"] for r in ordered(grid, results)] == [3, 6, 9]
    assert seen == [1, 2, 3] and finished == ["v1", "v2", "v3"]
    assert {r["pid"] for r in results.values()} == {os.getpid()}


def test_the_local_pool_runs_cells_in_workers_with_their_thread_count():
    grid = grid_of(*range(6))
    finished = []
    results = LocalPool(2, threads=1).run(grid, on_result=lambda c, r: finished.append(c.name),
                                          live=lambda cell: {"on_value": print})
    assert [r["value"] for r in ordered(grid, results)] == [0, 3, 6, 9, 12, 15]
    assert sorted(finished) == sorted(results)
    pids = {r["pid"] for r in results.values()}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert {r["threads"] for r in results.values()} == {1}
    # shared goes to each worker once: within a worker every cell sees the same object
    by_pid = {}
    for r in results.values():
        by_pid.setdefault(r["pid"], set()).add(r["shared_id"])
    assert all(len(ids) == 1 for ids in by_pid.values())


@pytest.mark.parametrize("executor", [InProcess(), LocalPool(2)], ids=["in-process", "pool"])
def test_a_failing_cell_stops_the_grid_with_its_error(executor):
    with pytest.raises(ValueError, match="cell value -1 is negative"):
        executor.run(grid_of(1, -1, 2))


def test_grids_refuse_repeated_names_and_closures():
    with pytest.raises(ValueError, match="distinct names; a repeat"):
        Grid(scaled, {}, [Cell("a", (1,)), Cell("a", (2,))])
    with pytest.raises(TypeError, match="module-level function"):
        Grid(lambda shared: shared, {}, [])

    def local(shared):
        return shared

    with pytest.raises(TypeError, match="module-level function"):
        Grid(local, {}, [])


@pytest.mark.parametrize("jobs", [0, -1, 1.5, True, "2"])
def test_jobs_must_be_a_positive_number_of_processes(jobs):
    with pytest.raises(ValueError, match="jobs must be a positive number of processes"):
        local_executor(jobs)


def test_local_executor_picks_in_process_for_one_job():
    assert isinstance(local_executor(1), InProcess)
    pool = local_executor(2, threads=3)
    assert isinstance(pool, LocalPool) and (pool.jobs, pool.threads) == (2, 3)


def test_the_local_pool_reports_each_result_as_its_cell_ends(tmp_path):
    """A cell's result reaches ``on_result`` while other cells still run (the run's log and
    progress bars are written from it)."""
    grid = Grid(waits_for, {"folder": str(tmp_path)}, [Cell("slow", ("slow",)),
                                                        Cell("fast", ("fast",))])
    (tmp_path / "fast.go").touch()
    seen = []

    def on_result(cell, result):
        seen.append((cell.name, (tmp_path / "slow.go").exists()))
        (tmp_path / "slow.go").touch()  # the slow cell may end only after this

    assert LocalPool(2).run(grid, on_result=on_result) == {"slow": "slow", "fast": "fast"}
    assert seen == [("fast", False), ("slow", True)]
