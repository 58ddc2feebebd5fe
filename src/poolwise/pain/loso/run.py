"""Leave-one-subject-out evaluation (and the challenge's fixed split), resumable, one file per
fold: the run folder, its resume rules and the fan-out over processes.

The protocols (which subjects train, select and test, and how windows are normalised) are in
:mod:`poolwise.pain.loso.protocols`; training and scoring one fold, and its files, in
:mod:`poolwise.pain.loso.folds`.

Protocol ``"clean"`` (ours), for each held-out subject: a fresh model (initialised from a
per-fold seed derived from the run seed and the subject id, recorded); inner selection subjects
drawn from the training subjects (stratified by group), never the held-out one; z-score
statistics fitted on the remaining training subjects only; augmentation on training windows
only; class weights from the training windows; the epoch chosen on the selection subjects; the
held-out subject's windows scored once, with the chosen state.

Protocol ``"reference"`` reproduces the leaks of the authors' code, to measure them, and
protocol ``"challenge"`` trains once on the fixed training subjects of a split file, selects on
its validation subjects and scores its test subjects once (one fold, named ``challenge``).

Each fold writes ``fold_<name>.safetensors`` and then ``fold_<name>.json`` (see
:mod:`poolwise.pain.loso.folds`), atomically and in a stable byte order, so a fold recomputed with
the same seed and thread count gives the same bytes. Wall times go to ``log.jsonl`` (a log, not
a result). ``run.json`` holds the configuration.

A run holds an advisory lock on its folder (a second run on the same folder refuses, or waits);
it first removes the temporary files a killed run left, then skips every finished fold whose
record parses and whose weights match the recorded sha256, and redoes any other, so a killed run
loses at most the folds in flight and never reports a damaged fold as done.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from poolwise import __version__
from poolwise.pain.data.dataset import WindowDataset
from poolwise.pain.loso.config import LosoConfig
from poolwise.pain.loso.folds import finished_fold, fold_folder, fold_path, model_kwargs, run_fold
from poolwise.pain.loso.protocols import PROTOCOLS, REFERENCE_LABEL
from poolwise.pain.loso.splits import choose_select_subjects, fold_seed, resolve_folds
from poolwise.pain.models import create_model
from poolwise.runs import Cell, Grid, RunFolder
from poolwise.runs.launch import Launch
from poolwise.runs.sinks import check_sinks, epoch_sinks

__all__ = [
    "PROTOCOLS",
    "REFERENCE_LABEL",
    "LosoConfig",
    "choose_select_subjects",
    "finished_fold",
    "fold_path",
    "fold_seconds",
    "fold_seed",
    "resolve_folds",
    "run_fold",
    "run_loso",
]


def data_fingerprint(dataset: WindowDataset) -> str:
    digest = hashlib.sha256()
    for array in (dataset.X, dataset.y, dataset.subject.astype(str)):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _prepare_run_dir(run_dir: Path, config: LosoConfig, dataset: WindowDataset) -> dict:
    header = {
        "poolwise_version": __version__,
        **config.to_dict(),
        "data": {
            "fingerprint": data_fingerprint(dataset),
            "windows": len(dataset),
            "subjects": dataset.subjects,
            "window": dataset.window,
            "channel_names": list(dataset.channel_names),
            **({"class_names": list(dataset.class_names)} if dataset.n_classes > 2 else {}),
        },
    }
    if config.evaluation.note is not None:
        header["protocol_note"] = config.evaluation.note
    fold_folder(run_dir).settings(header, ignore=("poolwise_version",))
    return header


def _fold_cell(shared: tuple, subject: str, on_epoch: Callable | None = None,
               on_batch: Callable | None = None) -> tuple[dict, float]:
    """One fold as a grid cell: (its record, its wall seconds)."""
    dataset, config, run_dir, prepared, log_to = shared
    start = time.perf_counter()
    with epoch_sinks(log_to, run_dir, on_epoch, name=subject) as on_epoch:
        record = run_fold(dataset, config, subject, run_dir, prepared,
                          on_epoch=on_epoch, on_batch=on_batch)
    return record, time.perf_counter() - start


def fold_seconds(run_dir: Path) -> dict[str, float]:
    """Wall seconds of each fold's last run, from ``log.jsonl`` (empty if there is none)."""
    return {e["subject"]: float(e["seconds"]) for e in RunFolder(run_dir).events("fold")}


def _check_data(dataset: WindowDataset, config: LosoConfig) -> None:
    """Raises ValueError for data no fold can use: a class without windows, or windows the
    model cannot take (too few channels or frames for it)."""
    missing = sorted(set(range(dataset.n_classes)) - set(np.unique(dataset.y).tolist()))
    if missing:
        raise ValueError(f"class {missing[0]} ({dataset.class_names[missing[0]]!r}) has no "
                         f"window; every one of the {dataset.n_classes} classes "
                         f"({', '.join(dataset.class_names)}) needs windows")
    kwargs = model_kwargs(config, dataset)
    try:
        model = create_model(config.model, **kwargs).eval()
        if not getattr(model, "closed_form", False):  # those check the shape when built
            with torch.inference_mode():
                model(torch.zeros(2, len(dataset.channel_names), dataset.window))
    except (ValueError, RuntimeError, TypeError) as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(
            f"model {config.model} cannot take this data's windows ({len(dataset.channel_names)} "
            f"channels x {dataset.window} frames): {first}") from None


def check_run(dataset: WindowDataset, config: LosoConfig,
              folds: Sequence[str] | None = None) -> list[str]:
    """Everything :func:`run_loso` checks before any work (the protocol's own checks, the
    folds, classes and the model's needs against the data, every fold's training subjects);
    returns the selected folds' names."""
    protocol = config.evaluation
    protocol.check(dataset)
    subjects = fold_names(dataset, config, folds)
    _check_data(dataset, config)
    for name in subjects:
        protocol.check_fold(dataset, name)
    return subjects


def fold_names(dataset: WindowDataset, config: LosoConfig,
               folds: Sequence[str] | None = None) -> list[str]:
    """The folds a run does: the selected held-out subjects, or the challenge's one fold."""
    return config.evaluation.fold_names(dataset.subjects, folds)


def run_loso(
    dataset: WindowDataset,
    run_dir: str | Path,
    config: LosoConfig,
    folds: Sequence[str] | None = None,
    jobs: int = 1,
    on_fold: Callable[[dict, bool], None] | None = None,
    on_epoch: Callable[[str, dict], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
    wait: bool = False,
    launch: Launch | None = None,
    on_status: Callable[[dict[str, int]], None] | None = None,
    log_to: Sequence[str] = (),
) -> list[dict]:
    """Runs (or resumes) the selected folds; returns every selected fold's record.

    ``on_fold(record, resumed)`` is called per fold, ``resumed`` True when it was finished
    before; ``on_notice(text)`` hears about removed temporary files and folds that are redone.
    ``jobs > 1`` runs clean-protocol folds in that many processes of one thread each;
    ``launch`` (instead of ``jobs``) chooses the executor, SLURM included
    (:class:`poolwise.runs.launch.Launch`), and ``on_status`` hears a SLURM grid's counts of
    pending / running / done / failed folds. ``log_to``: sinks of each fold's epochs besides
    the fold record (:mod:`poolwise.runs.sinks`; TensorBoard: one subfolder per fold).

    Raises:
        FolderBusyError: when another run holds ``run_dir`` (and ``wait`` is False).
        ValueError: before any work, for too few subjects, unknown folds, ``jobs < 1``, a
            split that names an unknown subject or one subject twice, a class without
            windows in the data or in a fold's training subjects, or windows the model cannot
            take.
        poolwise.runs.slurm.SlurmError: with SLURM, before submission when the cluster
            cannot take the folds; after every fold has ended when some failed (``GridFailed``
            names each with its job id, state and log).
        poolwise.runs.slurm.Submitted: with SLURM and ``launch.wait`` False, once the folds
            are queued (rerun to collect them).
    """
    run_dir = Path(run_dir)
    launch = Launch.of(launch, jobs)
    protocol = config.evaluation
    if launch.jobs > 1 and not protocol.independent_folds:
        raise ValueError(f"the {protocol.name} protocol chains folds in order: use jobs=1")
    if launch.launcher != "local" and not protocol.independent_folds:
        raise ValueError(f"the {protocol.name} protocol chains folds in order: run it with "
                         "the local launcher")
    subjects = check_run(dataset, config, folds)
    log_to = check_sinks(log_to)
    notice = on_notice or (lambda text: None)
    folder = fold_folder(run_dir)
    with folder.hold(wait=wait, on_notice=notice):
        _prepare_run_dir(run_dir, config, dataset)
        records: dict[str, dict] = {}
        todo = []
        for subject in subjects:
            record, problem = finished_fold(run_dir, subject)
            if record is not None:
                records[subject] = record
                if on_fold is not None:
                    on_fold(record, True)
            else:
                if problem is not None:
                    notice(f"fold {subject} is redone: {problem}")
                todo.append(subject)
        prepared = protocol.prepare(dataset) if todo else None
        grid = Grid(_fold_cell, (dataset, config, run_dir, prepared, log_to),
                    [Cell(subject, (subject,)) for subject in todo])

        def finished(cell: Cell, result: tuple[dict, float]) -> None:
            record, seconds = result
            folder.log({"event": "fold", "subject": record["test_subject"],
                        "seconds": round(seconds, 3),
                        "torch_threads": record["environment"]["torch_threads"],
                        "time": time.time()})
            records[record["test_subject"]] = record
            if on_fold is not None:
                on_fold(record, False)

        def live(cell: Cell) -> dict:
            return {"on_batch": on_batch,
                    "on_epoch": None if on_epoch is None else
                    (lambda r, s=cell.name: on_epoch(s, r))}

        executor = launch.executor(run_dir, n_cells=len(todo), local_threads=1,
                                   on_status=on_status)
        executor.run(grid, on_result=finished, live=live)
    return [records[s] for s in subjects]
