"""A grid of independent cells, and the executors that run it.

A :class:`Grid` is a module-level function, one ``shared`` argument that every cell needs (the
data, the run's configuration) and a list of :class:`Cell` (a stable name and the cell's own
picklable arguments). Nothing in it is a closure over live objects, so an executor may run a
cell in this process, in a worker process, or elsewhere:

- :class:`InProcess` runs the cells one after the other here; it alone can pass live
  callbacks (progress of epochs and batches) to the function.
- :class:`LocalPool` runs them in spawned worker processes that exit when this process dies
  (:func:`poolwise._procs.process_pool`), each with a fixed number of torch threads; ``shared``
  is sent once per worker, not once per cell. On Ctrl-C the workers are stopped at once (cells
  in flight are redone by the next run); on a cell's error the cells in flight finish first.

:func:`local_executor` picks one of the two from a number of jobs. Results arrive as cells
finish (``on_result``); :meth:`Executor.run` returns them by cell name. A cell that raises
stops the grid with its error (cells already finished keep their files, so a rerun resumes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from poolwise._procs import process_pool, sigint_blocked, stop_workers


@dataclass(frozen=True)
class Cell:
    """One independent piece of a grid: a stable name (unique in its grid, used for its files
    and messages) and the arguments that follow ``shared`` in the grid's function."""

    name: str
    args: tuple = ()


@dataclass
class Grid:
    """``fn(shared, *cell.args, **live)`` for every cell; ``fn`` is a module-level function."""

    fn: Callable[..., Any]
    shared: Any
    cells: list[Cell] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = [c.name for c in self.cells]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"grid cells need distinct names; {', '.join(duplicated)} repeat")
        if getattr(self.fn, "__qualname__", "").count("<locals>") or \
                getattr(self.fn, "__name__", "") == "<lambda>":
            raise TypeError(f"a grid's function must be a module-level function, got {self.fn!r}")


class Executor(Protocol):
    def run(self, grid: Grid, *,
            on_result: Callable[[Cell, Any], None] | None = None,
            live: Callable[[Cell], Mapping[str, Any]] | None = None) -> dict[str, Any]:
        """Runs every cell of ``grid``; returns ``{cell name: result}``."""


def _check_jobs(jobs: object) -> int:
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be a positive number of processes, got {jobs!r}")
    return jobs


class InProcess:
    """The cells one after the other in this process (``live(cell)`` gives each call its
    callbacks)."""

    def run(self, grid: Grid, *, on_result: Callable[[Cell, Any], None] | None = None,
            live: Callable[[Cell], Mapping[str, Any]] | None = None) -> dict[str, Any]:
        results = {}
        for cell in grid.cells:
            extra = dict(live(cell)) if live is not None else {}
            results[cell.name] = grid.fn(grid.shared, *cell.args, **extra)
            if on_result is not None:
                on_result(cell, results[cell.name])
        return results


_WORKER: dict[str, Any] = {}


def _init_worker(threads: int, shared: Any) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER["shared"] = shared


def _call(fn: Callable, args: tuple) -> Any:
    return fn(_WORKER["shared"], *args)


class LocalPool:
    """The cells in ``jobs`` spawned worker processes of ``threads`` torch threads each."""

    def __init__(self, jobs: int, threads: int = 1) -> None:
        self.jobs = _check_jobs(jobs)
        self.threads = _check_jobs(threads)

    def run(self, grid: Grid, *, on_result: Callable[[Cell, Any], None] | None = None,
            live: Callable[[Cell], Mapping[str, Any]] | None = None) -> dict[str, Any]:
        results = {}
        pool = process_pool(self.jobs, _init_worker, (self.threads, grid.shared))
        try:
            with sigint_blocked():  # the workers start here and never see Ctrl-C
                pending = {pool.submit(_call, grid.fn, cell.args): cell for cell in grid.cells}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)  # each result as it ends
                for future in done:
                    cell = pending.pop(future)
                    results[cell.name] = future.result()
                    if on_result is not None:
                        on_result(cell, results[cell.name])
        except KeyboardInterrupt:  # Ctrl-C: stop now, do not wait for the cells in flight
            stop_workers(pool)
            raise
        except BaseException:  # a cell's error: the cells in flight finish and keep their files
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()
        return results


def local_executor(jobs: int = 1, threads: int | None = None) -> InProcess | LocalPool:
    """:class:`InProcess` for one job, else :class:`LocalPool` with ``threads`` per worker
    (default: the CPUs shared evenly, at least one)."""
    import os

    jobs = _check_jobs(jobs)
    if jobs == 1:
        return InProcess()
    return LocalPool(jobs, threads or max(1, (os.cpu_count() or 1) // jobs))


def ordered(grid: Grid, results: Mapping[str, Any]) -> list[Any]:
    """The results in the grid's cell order."""
    return [results[c.name] for c in grid.cells]

