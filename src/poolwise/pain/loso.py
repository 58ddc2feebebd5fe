"""Leave-one-subject-out evaluation (and the challenge's fixed split), resumable, one file per
fold: the run folder, its resume rules and the fan-out over processes.

The protocols (which subjects train, select and test, and how windows are normalised) are in
:mod:`poolwise.pain.protocols`; training and scoring one fold, and its files, in
:mod:`poolwise.pain.folds`.

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
:mod:`poolwise.pain.folds`), atomically and in a stable byte order, so a fold recomputed with
the same seed and thread count gives the same bytes. Wall times go to ``log.jsonl`` (a log, not
a result). ``run.json`` holds the configuration.

A run holds an advisory lock on its folder (a second run on the same folder refuses, or waits);
it first removes the temporary files a killed run left, then skips every finished fold whose
record parses and whose weights match the recorded sha256, and redoes any other, so a killed run
loses at most the folds in flight and never reports a damaged fold as done.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from poolwise import __version__
from poolwise._io import append_jsonl, check_settings, lock_folder, remove_stale_temps, write_json
from poolwise._procs import process_pool
from poolwise.pain.data.dataset import WindowDataset
from poolwise.pain.folds import (
    PROTOCOL_NOTES,
    finished_fold,
    fold_path,
    fold_seed,
    model_kwargs,
    run_fold,
)
from poolwise.pain.models import create_model, list_models
from poolwise.pain.protocols import (
    CHALLENGE_FOLD,
    PROTOCOLS,
    REFERENCE_LABEL,
    check_split,
    choose_select_subjects,
    reference_expansion,
)
from poolwise.pain.train import TrainConfig

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

@dataclass(frozen=True)
class LosoConfig:
    model: str
    protocol: str = "clean"
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    n_select_subjects: int = 3
    model_kwargs: dict = field(default_factory=dict)
    split: dict | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r} is not one of {PROTOCOLS}")
        if self.n_select_subjects < 1:
            raise ValueError("n_select_subjects must be at least 1")
        if (self.protocol == "challenge") != (self.split is not None):
            raise ValueError("the challenge protocol, and only it, takes a split of the "
                             "subjects (a split file: --split FILE)")
        if self.model not in list_models():
            raise ValueError(f"unknown pain model {self.model!r}; known: "
                             f"{', '.join(list_models())}")
        # the model's arguments are checked against the data's shape by run_loso

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "protocol": self.protocol,
            "train": self.train.to_dict(),
            "seed": self.seed,
            "n_select_subjects": self.n_select_subjects,
            "model_kwargs": self.model_kwargs,
            **({"split": self.split} if self.split is not None else {}),
        }


def data_fingerprint(dataset: WindowDataset) -> str:
    digest = hashlib.sha256()
    for array in (dataset.X, dataset.y, dataset.subject.astype(str)):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def resolve_folds(subjects: Sequence[str], folds: Sequence[str] | None) -> list[str]:
    """Subjects for ``--folds`` items: subject ids, 0-based fold indices or ranges ``a-b``."""
    if not folds:
        return list(subjects)
    chosen: list[str] = []
    for item in folds:
        if item in subjects:
            chosen.append(item)
        elif item.isdigit() and int(item) < len(subjects):
            chosen.append(subjects[int(item)])
        elif "-" in item and all(part.isdigit() for part in item.split("-", 1)):
            lo, hi = map(int, item.split("-", 1))
            if not lo <= hi < len(subjects):
                raise ValueError(f"fold range {item!r} is outside 0-{len(subjects) - 1}")
            chosen.extend(subjects[lo : hi + 1])
        else:
            raise ValueError(
                f"fold {item!r} is neither a subject ({', '.join(subjects[:4])}, ...) nor an "
                f"index 0-{len(subjects) - 1}"
            )
    return list(dict.fromkeys(chosen))


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
    if config.protocol in PROTOCOL_NOTES:
        header["protocol_note"] = PROTOCOL_NOTES[config.protocol]
    path = run_dir / "run.json"
    if not check_settings(path, header, "LOSO run", ignore=("poolwise_version",)):
        write_json(path, header)
    return header


_WORKER: dict = {}


def _init_worker(dataset: WindowDataset, config: LosoConfig, run_dir: Path) -> None:
    torch.set_num_threads(1)
    _WORKER.update(dataset=dataset, config=config, run_dir=run_dir)


def _worker_fold(subject: str) -> tuple[dict, float]:
    start = time.perf_counter()
    record = run_fold(_WORKER["dataset"], _WORKER["config"], subject, _WORKER["run_dir"])
    return record, time.perf_counter() - start


def _log_fold(run_dir: Path, record: dict, seconds: float) -> None:
    append_jsonl(run_dir / "log.jsonl", {
        "event": "fold", "subject": record["test_subject"], "seconds": round(seconds, 3),
        "torch_threads": record["environment"]["torch_threads"], "time": time.time(),
    })


def fold_seconds(run_dir: Path) -> dict[str, float]:
    """Wall seconds of each fold's last run, from ``log.jsonl`` (empty if there is none)."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return {}
    seconds = {}
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a log line cut by a crash
            continue
        if entry.get("event") == "fold":
            seconds[entry["subject"]] = float(entry["seconds"])
    return seconds


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
        with torch.inference_mode():
            model(torch.zeros(2, len(dataset.channel_names), dataset.window))
    except (ValueError, RuntimeError, TypeError) as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(
            f"model {config.model} cannot take this data's windows ({len(dataset.channel_names)} "
            f"channels x {dataset.window} frames): {first}") from None


def _check_folds(dataset: WindowDataset, config: LosoConfig, names: Sequence[str]) -> None:
    """Raises ValueError, before any training, for a run that cannot go through: a fold whose
    training windows lack a class, or (clean protocol) a fold with no usable choice of
    selection subjects."""
    every = set(range(dataset.n_classes))
    for name in names:
        if config.protocol == "challenge":
            train = np.isin(dataset.subject, config.split["train"])
            where = "the split's training subjects"
        else:
            train = dataset.subject != name
            where = f"fold {name}: the other subjects"
        lacking = sorted(every - set(np.unique(dataset.y[train]).tolist()))
        if lacking:
            raise ValueError(f"{where} have no window of class {lacking[0]} "
                             f"({dataset.class_names[lacking[0]]!r}); a classifier of "
                             f"{dataset.n_classes} classes cannot be fitted on them")
        if config.protocol == "clean":
            rng = np.random.default_rng(fold_seed(config.seed, name))  # as the fold draws it
            try:
                choose_select_subjects(dataset, [s for s in dataset.subjects if s != name],
                                       config.n_select_subjects, rng)
            except ValueError as error:
                raise ValueError(f"fold {name}: {error}") from None


def fold_names(dataset: WindowDataset, config: LosoConfig,
               folds: Sequence[str] | None = None) -> list[str]:
    """The folds a run does: the selected held-out subjects, or the challenge's one fold."""
    if config.protocol == "challenge":
        if folds:
            raise ValueError("the challenge protocol has one fold; --folds does not apply")
        return [CHALLENGE_FOLD]
    return resolve_folds(dataset.subjects, folds)


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
) -> list[dict]:
    """Runs (or resumes) the selected folds; returns every selected fold's record.

    ``on_fold(record, resumed)`` is called per fold, ``resumed`` True when it was finished
    before; ``on_notice(text)`` hears about removed temporary files and folds that are redone.
    ``jobs > 1`` runs clean-protocol folds in that many processes of one thread each.

    Raises:
        FolderBusyError: when another run holds ``run_dir`` (and ``wait`` is False).
        ValueError: before any work, for too few subjects, unknown folds, ``jobs < 1``, a
            split that names an unknown subject or one subject twice, a class without
            windows in the data or in a fold's training subjects, or windows the model cannot
            take.
    """
    run_dir = Path(run_dir)
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive number of processes, got {jobs!r}")
    if jobs > 1 and config.protocol == "reference":
        raise ValueError("the reference protocol chains folds in order: use jobs=1")
    if config.protocol == "challenge":
        check_split(config.split, dataset.subjects)
    elif len(dataset.subjects) < config.n_select_subjects + 2:
        raise ValueError(
            f"LOSO needs at least {config.n_select_subjects + 2} subjects, "
            f"the data has {len(dataset.subjects)}"
        )
    subjects = fold_names(dataset, config, folds)
    _check_data(dataset, config)
    _check_folds(dataset, config, subjects)
    notice = on_notice or (lambda text: None)
    with lock_folder(run_dir, wait=wait):
        for path in remove_stale_temps(run_dir):
            notice(f"removed {path}, left by a killed run")
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
        if jobs > 1 and len(todo) > 1:
            with process_pool(jobs, _init_worker, (dataset, config, run_dir)) as pool:
                for record, seconds in pool.map(_worker_fold, todo):
                    _log_fold(run_dir, record, seconds)
                    records[record["test_subject"]] = record
                    if on_fold is not None:
                        on_fold(record, False)
        else:
            expanded = (
                reference_expansion(dataset, config.seed)
                if config.protocol == "reference" and todo else None
            )
            for subject in todo:
                start = time.perf_counter()
                record = run_fold(
                    dataset, config, subject, run_dir, expanded,
                    on_epoch=None if on_epoch is None else lambda r, s=subject: on_epoch(s, r),
                    on_batch=on_batch,
                )
                _log_fold(run_dir, record, time.perf_counter() - start)
                records[subject] = record
                if on_fold is not None:
                    on_fold(record, False)
    return [records[s] for s in subjects]
