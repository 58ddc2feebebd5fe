"""Where a grid's cells run: the one choice every grid command offers as ``--launcher``.

- ``local`` (default): this machine, one cell at a time or ``jobs`` worker processes
  (:func:`poolwise.runs.local_executor`).
- ``slurm``: one SLURM job-array element per cell (:class:`poolwise.runs.slurm.SlurmExecutor`),
  with submitit's files in ``<run folder>/slurm/``, so rerunning the same command finds them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from poolwise.runs.grid import Executor, InProcess, LocalPool, _check_jobs, local_executor
from poolwise.runs.slurm import SlurmOptions

LAUNCHERS = ("local", "slurm")
SLURM_FOLDER = "slurm"


@dataclass(frozen=True)
class Launch:
    """How to run a grid.

    Args:
        launcher: One of :data:`LAUNCHERS`.
        jobs: Local worker processes (``local`` only).
        threads: torch threads per cell (default: ``local`` shares the CPUs among the jobs,
            ``slurm`` uses the element's CPUs).
        slurm: The scheduler's options (``slurm`` only; default :class:`SlurmOptions`).
        wait: ``slurm`` only: with False the command returns once the cells are queued.
    """

    launcher: str = "local"
    jobs: int = 1
    threads: int | None = None
    slurm: SlurmOptions | None = None
    wait: bool = True

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"launcher {self.launcher!r} is not one of {', '.join(LAUNCHERS)}")
        _check_jobs(self.jobs)
        if self.launcher == "slurm" and self.jobs != 1:
            raise ValueError("--jobs is for the local launcher; with --launcher slurm every cell "
                             "is its own job (see --slurm-array-parallelism)")

    @classmethod
    def of(cls, launch: Launch | None, jobs: int = 1) -> Launch:
        """``launch``, or the local launch of ``jobs`` processes (a library call gives one of
        the two)."""
        if launch is None:
            return cls(jobs=jobs)
        if jobs != 1:
            raise ValueError("give jobs or launch, not both")
        return launch

    def check(self, run_dir: str | os.PathLike) -> list[str]:
        """Checks that need no submission (SLURM present, partition known); returns warnings."""
        if self.launcher != "slurm":
            return []
        from poolwise.runs.slurm import check_submission

        return check_submission(run_dir, self.options())

    def options(self) -> SlurmOptions:
        """The scheduler's options (the defaults when none were given)."""
        return self.slurm if self.slurm is not None else SlurmOptions()

    def executor(self, run_dir: str | os.PathLike, *, n_cells: int | None = None,
                 local_threads: int | None = None,
                 on_status: Callable[[dict[str, int]], None] | None = None) -> Executor:
        """The executor for a grid whose run folder is ``run_dir``. ``local_threads``: the
        threads a local worker gets when ``threads`` is unset (a command's own default);
        ``n_cells``: with one cell left a local run stays in this process."""
        if self.launcher == "local":
            if self.jobs == 1 or (n_cells is not None and n_cells <= 1):
                return InProcess()
            if self.threads is None and local_threads is None:
                return local_executor(self.jobs)
            return LocalPool(self.jobs, self.threads or local_threads)
        from poolwise.runs.slurm import SlurmExecutor

        return SlurmExecutor(Path(run_dir) / SLURM_FOLDER, self.options(), wait=self.wait,
                             threads=self.threads, on_status=on_status)
