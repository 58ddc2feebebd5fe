"""The SLURM executor: each cell of a grid is one element of a job array, submitted through
submitit (``pip install poolwise[slurm]``).

- **Submission.** The grid's ``shared`` argument is written once to ``<jobs folder>/shared.pkl``
  and every array element loads it there (the jobs folder must be on a file system the compute
  nodes see). submitit's folder (``<jobs folder>/<job id>/``) holds each element's submission,
  logs and result; ``<jobs folder>/cells.json`` maps each cell to its job id, so that a later
  call (after ``wait=False``, a crash of this process, or a cell that failed) collects what
  finished, waits for what is still queued or running, and submits again only what is
  missing or failed.
- **State** comes from the result submitit writes, ``squeue`` for jobs still in the queue and
  ``scontrol show job`` for the exit state of jobs that left it; ``sacct`` is not needed, so
  clusters without accounting work too.
- **Preemption and time limits.** A cell is a submitit checkpointable callable: on SLURM's
  warning signal (submitit asks for ``USR2`` ``signal_delay_s`` before the limit) the job
  requeues itself with the same arguments, and the cell resumes from its run folder, which
  holds every finished epoch or fold.
- **Failures** are collected, not raised one by one: when every cell has ended,
  :class:`GridFailed` names each failed cell with its job id, state and log path; the cells
  that finished keep their results.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from poolwise._io import write_bytes, write_json
from poolwise.runs.grid import Cell, Grid

SHARED_NAME = "shared.pkl"
CELLS_NAME = "cells.json"
# folders that are usually local to each node, so compute nodes do not see what the login node
# writes there
NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm", "/run/user")


@dataclass(frozen=True)
class SlurmOptions:
    """What each array element asks the scheduler for. ``extra``: any other ``sbatch`` option
    (``{"mail-type": "END"}``), passed through as ``--key=value``."""

    partition: str | None = None
    time_min: int = 24 * 60
    cpus_per_task: int = 8
    gpus_per_task: int = 1
    mem_gb: float | None = None
    nodes: int = 1
    tasks_per_node: int = 1
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = 256
    signal_delay_s: int = 120
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("time_min", "cpus_per_task", "nodes", "tasks_per_node",
                     "array_parallelism"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"slurm option {name} must be a positive integer, got {value!r}")
        if not isinstance(self.gpus_per_task, int) or self.gpus_per_task < 0:
            raise ValueError(f"slurm option gpus_per_task must be 0 or more, got "
                             f"{self.gpus_per_task!r}")
        if self.mem_gb is not None and not self.mem_gb > 0:
            raise ValueError(f"slurm option mem_gb must be positive, got {self.mem_gb!r}")
        if self.signal_delay_s < 0:
            raise ValueError(f"slurm option signal_delay_s must be 0 or more, got "
                             f"{self.signal_delay_s!r}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str = "slurm options",
                     base: SlurmOptions | None = None) -> SlurmOptions:
        """``base`` (default: the defaults) with ``values`` over it; an unknown key is a
        ValueError naming ``where`` and the known keys."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(known))}")
        merged = {**asdict(base or cls()), **values}
        merged["extra"] = {str(k): str(v) for k, v in dict(merged["extra"] or {}).items()}
        try:
            return cls(**merged)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None

    def submitit_parameters(self) -> dict:
        """The keywords of ``submitit.SlurmExecutor.update_parameters``."""
        params: dict[str, Any] = {
            "time": self.time_min, "cpus_per_task": self.cpus_per_task, "nodes": self.nodes,
            "ntasks_per_node": self.tasks_per_node, "array_parallelism": self.array_parallelism,
            "signal_delay_s": self.signal_delay_s,
        }
        if self.gpus_per_task:
            params["gpus_per_node"] = self.gpus_per_task * self.tasks_per_node
        if self.mem_gb is not None:
            params["mem"] = f"{int(self.mem_gb * 1024)}MB"
        for name in ("partition", "account", "qos", "constraint"):
            if getattr(self, name) is not None:
                params[name] = getattr(self, name)
        if self.extra:
            params["additional_parameters"] = dict(self.extra)
        return params


class SlurmError(RuntimeError):
    """The cluster cannot take or finish the work; the message says what and what to do."""


class GridFailed(SlurmError):
    """Some cells of a grid failed on the cluster; ``failed`` maps each to its description."""

    def __init__(self, failed: Mapping[str, str], finished: int) -> None:
        self.failed = dict(failed)
        lines = "\n".join(f"  {name}: {text}" for name, text in self.failed.items())
        super().__init__(f"{len(self.failed)} cell(s) failed ({finished} finished; rerun the "
                         f"same command to submit the failed ones again):\n{lines}")


class Submitted(Exception):  # not an error: the signal that the grid was left queued
    """Raised by a run with ``wait=False``: the cells are queued; ``jobs`` maps each cell to
    its SLURM job id."""

    def __init__(self, jobs: Mapping[str, str], finished: int) -> None:
        self.jobs = dict(jobs)
        self.finished = finished
        super().__init__(f"{len(self.jobs)} cell(s) queued or running, {finished} finished")


def check_slurm() -> None:
    """Raises :class:`SlurmError` (one clear line) when this machine cannot submit to SLURM."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise SlurmError("--launcher slurm needs submitit: pip install 'poolwise[slurm]'"
                         ) from None
    for command in ("sbatch", "squeue", "scontrol"):
        if shutil.which(command) is None:
            raise SlurmError(f"--launcher slurm: no `{command}` on this machine; run on a "
                               "SLURM login node (or use --launcher local)")


def check_partition(partition: str | None) -> None:
    """Raises ValueError naming the known partitions when ``partition`` is not one."""
    if partition is None:
        return
    out = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True,
                         timeout=60)
    known = sorted(set(out.stdout.split()))
    if out.returncode == 0 and partition not in known:
        raise ValueError(f"--slurm-partition {partition!r} is not a partition of this cluster "
                         f"(sinfo lists: {', '.join(known) or 'none'})")


def node_local(path: Path) -> bool:
    """Whether ``path`` lies in a folder that is usually local to each node."""
    resolved = str(Path(path).resolve())
    return any(resolved == p or resolved.startswith(p + "/") for p in NODE_LOCAL)


def check_submission(run_dir: str | os.PathLike, options: SlurmOptions) -> list[str]:
    """Everything that can be checked before anything is submitted: submitit and the SLURM
    commands (:func:`check_slurm`), the partition (:func:`check_partition`). Returns warnings
    (a run folder on a node-local path, which compute nodes on other machines do not see)."""
    check_slurm()
    check_partition(options.partition)
    if node_local(Path(run_dir)):
        return [f"{Path(run_dir).resolve()} is on a node-local path: on a cluster of several "
                "nodes the jobs cannot see it; use a folder on a shared file system"]
    return []


_SHARED: dict[str, Any] = {}


def _load_shared(path: str) -> Any:
    if path not in _SHARED:
        with open(path, "rb") as f:
            # written by this grid's own submitter, in the user's own run folder
            _SHARED[path] = pickle.load(f)
    return _SHARED[path]


def export_distributed() -> None:
    """In a job of several tasks, the rendezvous of ``torch.distributed`` (``env://``: rank,
    world size, local rank, master address and port) from SLURM's environment, through
    submitit's helper; each task keeps every GPU of its node visible and picks
    ``cuda:LOCAL_RANK``, as under ``torchrun``."""
    from submitit import JobEnvironment
    from submitit.helpers import TorchDistributedEnvironment

    if JobEnvironment().num_tasks > 1:
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


class SlurmCell:
    """One array element: ``fn(shared, *args)`` with ``threads`` torch threads (in each task,
    when the element has several: see :func:`export_distributed`). Requeues itself on SLURM's
    warning signal (submitit's checkpoint protocol), unless the job reached its time limit
    (``time_min``) without saving anything: then requeueing would redo the same work, so it
    says so in its log and ends."""

    def __init__(self, fn: Callable, shared_path: str, args: tuple, threads: int,
                 time_min: int | None = None) -> None:
        self.fn, self.shared_path, self.args, self.threads = fn, shared_path, args, threads
        self.time_min = time_min
        self.started = time.time()
        self.progress_at_start = 0

    def __call__(self) -> Any:
        import torch

        from poolwise.runs.folder import progress

        self.started, self.progress_at_start = time.time(), progress()
        torch.set_num_threads(self.threads)
        export_distributed()
        return self.fn(_load_shared(self.shared_path), *self.args)

    def stalled(self) -> bool:
        """Whether the job reached its time limit (as submitit judges it: 80 % of the limit, or
        10 minutes before it) without saving an epoch or an item."""
        from poolwise.runs.folder import progress

        if self.time_min is None or progress() > self.progress_at_start:
            return False
        limit = self.time_min * 60
        return time.time() - self.started >= min(0.8 * limit, limit - 600)

    def checkpoint(self) -> Any:
        from submitit.helpers import DelayedSubmission

        if self.stalled():
            print(f"poolwise: this job reached its time limit ({self.time_min} min) without "
                  "finishing one epoch or item, so a requeued job would start the same work "
                  "again; not requeued. Raise --slurm-time (or use smaller work per cell).",
                  file=sys.stderr, flush=True)
            return None
        return DelayedSubmission(SlurmCell(self.fn, self.shared_path, self.args, self.threads,
                                           self.time_min))


def _queue_states(job_ids: list[str]) -> dict[str, str]:
    """State of each job still in SLURM's queue (array elements as ``<id>_<k>``)."""
    if not job_ids:
        return {}
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(job_ids)],
                         capture_output=True, text=True, timeout=60)
    states = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def _ended_state(job_id: str) -> str:
    """The final state and exit code SLURM still knows for a job that left the queue."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True,
                         text=True, timeout=60)
    fields = dict(item.split("=", 1) for item in out.stdout.split() if "=" in item)
    state = fields.get("JobState")
    if not state:
        return "ended without a result (SLURM no longer knows the job)"
    return f"{state}, exit code {fields.get('ExitCode', '?')}"


class SlurmExecutor:
    """Runs a grid's cells as one SLURM job array (see the module's description).

    Args:
        folder: Where submitit's files, ``shared.pkl`` and ``cells.json`` go (on a shared
            file system).
        options: What each element asks for.
        wait: Wait for every cell; with False, :meth:`run` raises :class:`Submitted` once the
            cells are queued.
        threads: torch threads in each element (default: the element's CPUs).
        poll_s: Seconds between two looks at the queue.
        on_status: Called with ``{"pending": n, "running": n, "done": n, "failed": n}``
            whenever the counts change.
    """

    def __init__(self, folder: str | os.PathLike, options: SlurmOptions | None = None, *,
                 wait: bool = True, threads: int | None = None, poll_s: float = 5.0,
                 on_status: Callable[[dict[str, int]], None] | None = None) -> None:
        self.folder = Path(folder)
        self.options = options or SlurmOptions()
        self.wait = wait
        self.threads = threads or self.options.cpus_per_task
        self.poll_s = poll_s
        self.on_status = on_status

    # --- what earlier calls left ---------------------------------------------------------------

    def _known(self) -> dict[str, str]:
        path = self.folder / CELLS_NAME
        return json.loads(path.read_text()) if path.is_file() else {}

    def _job(self, job_id: str) -> Any:
        import submitit

        return submitit.SlurmJob(folder=self.folder / "%j", job_id=job_id)

    def _outcome(self, job_id: str) -> tuple[str, Any] | None:
        """("success", result) or ("error", traceback text) once the job wrote its result."""
        job = self._job(job_id)
        if not job.paths.result_pickle.exists():
            return None
        with open(job.paths.result_pickle, "rb") as f:
            # submitit's own result file for a job this grid submitted
            return pickle.load(f)

    def log_path(self, job_id: str) -> Path:
        return self._job(job_id).paths.stderr

    # --- running -------------------------------------------------------------------------------

    def _submit(self, grid: Grid, cells: list[Cell]) -> dict[str, str]:
        import submitit

        self.folder.mkdir(parents=True, exist_ok=True)
        shared_path = self.folder / SHARED_NAME
        write_bytes(shared_path, pickle.dumps(grid.shared, protocol=pickle.HIGHEST_PROTOCOL))
        executor = submitit.SlurmExecutor(folder=self.folder / "%j")
        executor.update_parameters(**self.options.submitit_parameters(),
                                   job_name=f"poolwise-{self.folder.parent.name}"[:60])
        with executor.batch():
            jobs = [executor.submit(SlurmCell(grid.fn, str(shared_path), cell.args,
                                              self.threads, self.options.time_min))
                    for cell in cells]
        return {cell.name: job.job_id for cell, job in zip(cells, jobs, strict=True)}

    def run(self, grid: Grid, *, on_result: Callable[[Cell, Any], None] | None = None,
            live: Callable[[Cell], Mapping[str, Any]] | None = None) -> dict[str, Any]:
        """Submits (or collects) every cell; returns ``{cell name: result}``.

        Raises:
            GridFailed: when some cells failed, after every other cell has ended.
            Submitted: with ``wait=False``, once every cell that has not finished is queued.
        """
        check_slurm()
        known = self._known()
        results: dict[str, Any] = {}
        failed: dict[str, str] = {}
        queued: dict[str, str] = {}
        states = _queue_states(sorted({known[c.name] for c in grid.cells if c.name in known}))
        todo = []
        for cell in grid.cells:
            job_id = known.get(cell.name)
            outcome = None if job_id is None else self._outcome(job_id)
            if outcome is not None and outcome[0] == "success":
                results[cell.name] = outcome[1]
                if on_result is not None:
                    on_result(cell, outcome[1])
            elif job_id is not None and outcome is None and job_id in states:
                queued[cell.name] = job_id  # still pending or running: wait, do not resubmit
            else:
                todo.append(cell)
        if todo:
            queued.update(self._submit(grid, todo))
            write_json(self.folder / CELLS_NAME, {**known, **queued})
        if not self.wait and queued:
            raise Submitted(queued, len(results))
        cells = {c.name: c for c in grid.cells}
        last = None
        while queued:
            states = _queue_states(sorted(queued.values()))
            for name, job_id in list(queued.items()):
                outcome = self._outcome(job_id)
                if outcome is None and job_id in states:
                    continue
                if outcome is None:  # left the queue without a result: killed or cancelled
                    time.sleep(min(self.poll_s, 2.0))  # a result written as it ended
                    outcome = self._outcome(job_id)
                del queued[name]
                if outcome is None:
                    failed[name] = (f"job {job_id}: {_ended_state(job_id)}; log "
                                    f"{self.log_path(job_id)}")
                elif outcome[0] == "success":
                    results[name] = outcome[1]
                    if on_result is not None:
                        on_result(cells[name], outcome[1])
                else:
                    error = str(outcome[1]).strip().splitlines()[-1]
                    failed[name] = f"job {job_id}: FAILED ({error}); log {self.log_path(job_id)}"
            running = sum(1 for j in queued.values() if states.get(j) == "RUNNING")
            status = {"pending": len(queued) - running, "running": running,
                      "done": len(results), "failed": len(failed)}
            if self.on_status is not None and status != last:
                self.on_status(status)
            last = status
            if queued:
                time.sleep(self.poll_s)
        if failed:
            raise GridFailed(failed, len(results))
        return results
