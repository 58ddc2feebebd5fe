"""Leave-one-subject-out evaluation, leakage-free by default, resumable, one file per fold.

Protocol ``"clean"`` (ours), for each held-out subject:

1. a fresh model (new initialisation from a per-fold seed derived from the run seed and the
   subject id, recorded);
2. inner selection subjects drawn from the training subjects (stratified by group, with at
   least one protective window), never the held-out one;
3. z-score statistics fitted on the remaining training subjects only;
4. augmentation on training windows only (online, see :mod:`poolwise.pain.augment`);
5. class weights from the training windows; the epoch is chosen on the selection subjects;
6. the held-out subject's windows are scored once, with the chosen state.

Protocol ``"reference"`` reproduces the leaks of the authors' code, to measure them: the
seven-fold augmentation and the z-score are applied to all subjects before the split, the
held-out subject (its augmented windows included) is both the selection and the test set, and
the CNN is one object shared by every fold (each fold starts from the CNN state the previous
fold ended with; models without a CNN only get the other leaks). Its numbers are optimistic by
construction and are labelled as such in every file and table.

Each fold writes the chosen weights ``fold_<subject>.safetensors`` (a complete detector
checkpoint: see :mod:`poolwise.pain.detector`), then ``fold_<subject>.json``, which records the
weights' sha256 and marks the fold as finished; both are written atomically, in a stable byte
order, so a fold recomputed with the same seed and thread count gives the same bytes. Wall
times go to ``log.jsonl`` (a log, not a result). ``run.json`` holds the configuration.

A run holds an advisory lock on its folder (a second run on the same folder refuses, or waits);
it first removes the temporary files a killed run left, then skips every finished fold whose
record parses and whose weights match the recorded sha256, and redoes any other, so a killed run
loses at most the folds in flight and never reports a damaged fold as done.
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from poolwise import __version__
from poolwise._io import (
    append_jsonl,
    check_settings,
    lock_folder,
    read_json,
    remove_stale_temps,
    save_safetensors,
    sha256_file,
    write_bytes,
    write_json,
)
from poolwise._procs import process_pool
from poolwise.pain.augment import apply_zscore, expand, fit_zscore
from poolwise.pain.data.dataset import WindowDataset
from poolwise.pain.detector import DetectorConfig, choose_threshold, detector_bytes
from poolwise.pain.metrics import binary_metrics
from poolwise.pain.models import count_parameters, create_model
from poolwise.pain.train import TrainConfig, fit, predict_proba

PROTOCOLS = ("clean", "reference")
REFERENCE_LABEL = (
    "REFERENCE (leaky) protocol of the authors' code: normalisation and augmentation before the "
    "split, held-out subject used for model selection, CNN shared across folds. Optimistic by "
    "construction; not an estimate of performance on new people."
)


@dataclass(frozen=True)
class LosoConfig:
    model: str
    protocol: str = "clean"
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    n_select_subjects: int = 3
    model_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r} is not one of {PROTOCOLS}")
        if self.n_select_subjects < 1:
            raise ValueError("n_select_subjects must be at least 1")
        create_model(self.model, **self.model_kwargs)  # fails early on a bad name or option

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "protocol": self.protocol,
            "train": self.train.to_dict(),
            "seed": self.seed,
            "n_select_subjects": self.n_select_subjects,
            "model_kwargs": self.model_kwargs,
        }


def fold_seed(seed: int, subject: str) -> int:
    """A per-fold seed that depends on the run seed and the subject id only."""
    state = np.random.SeedSequence([seed, zlib.crc32(subject.encode())]).generate_state(1)
    return int(state[0])


def data_fingerprint(dataset: WindowDataset) -> str:
    digest = hashlib.sha256()
    for array in (dataset.X, dataset.y, dataset.subject.astype(str)):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def choose_select_subjects(
    dataset: WindowDataset, train_subjects: Sequence[str], n: int, rng: np.random.Generator
) -> list[str]:
    """``n`` training subjects, spread over groups in proportion, with a protective window.

    The subjects left for fitting must hold both classes too.
    """
    if n >= len(train_subjects):
        raise ValueError(f"cannot hold out {n} selection subjects from {len(train_subjects)}")
    group_of = {s: str(dataset.group[dataset.subject == s][0]) for s in train_subjects}
    positives = {s: int(dataset.y[dataset.subject == s].sum()) for s in train_subjects}
    groups = sorted(set(group_of.values()))
    members = {g: [s for s in train_subjects if group_of[s] == g] for g in groups}
    shares = np.array([len(members[g]) for g in groups], dtype=float) * n / len(train_subjects)
    counts = np.floor(shares).astype(int)
    for i in np.argsort(-(shares - counts))[: n - counts.sum()]:
        counts[i] += 1
    for _ in range(100):
        chosen = [
            s
            for g, k in zip(groups, counts, strict=True)
            for s in rng.choice(members[g], k, replace=False)
        ]
        rest = [s for s in train_subjects if s not in chosen]
        n_rest = int(np.isin(dataset.subject, rest).sum())
        if sum(positives[s] for s in chosen) > 0 and 0 < sum(positives[s] for s in rest) < n_rest:
            return sorted(str(s) for s in chosen)
    raise ValueError(
        f"no choice of {n} selection subjects among {len(train_subjects)} leaves protective "
        "windows in both the selection and the fitting subjects; use more subjects or fewer "
        "--select-subjects"
    )


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


def fold_path(run_dir: Path, subject: str) -> Path:
    return run_dir / f"fold_{subject}.json"


def _chain_path(run_dir: Path, subject: str) -> Path:
    return run_dir / "reference_cnn_chain" / f"after_{subject}.safetensors"


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
        },
    }
    if config.protocol == "reference":
        header["protocol_note"] = REFERENCE_LABEL
    path = run_dir / "run.json"
    if not check_settings(path, header, "LOSO run", ignore=("poolwise_version",)):
        write_json(path, header)
    return header


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _fold_arrays(
    dataset: WindowDataset, config: LosoConfig, subject: str, seed: int, expanded: tuple | None
) -> dict:
    """Windows of one fold, normalised as the protocol says."""
    rng = np.random.default_rng(seed)
    train_subjects = [s for s in dataset.subjects if s != subject]
    if config.protocol == "clean":
        select = choose_select_subjects(dataset, train_subjects, config.n_select_subjects, rng)
        fit_mask = np.isin(dataset.subject, train_subjects) & ~np.isin(dataset.subject, select)
        mean, std = fit_zscore(dataset.X[fit_mask])
        test_mask = dataset.subject == subject
        select_mask = np.isin(dataset.subject, select)
        return {
            "train_subjects": train_subjects,
            "val_subjects": select,
            "normalisation": {
                "fitted_on": sorted(set(train_subjects) - set(select)),
                "mean": mean.tolist(),
                "std": std.tolist(),
            },
            "train": (apply_zscore(dataset.X[fit_mask], mean, std), dataset.y[fit_mask]),
            "select": (apply_zscore(dataset.X[select_mask], mean, std), dataset.y[select_mask]),
            "test": (
                apply_zscore(dataset.X[test_mask], mean, std),
                np.flatnonzero(test_mask),
                np.zeros(int(test_mask.sum()), dtype=np.int64),
            ),
            "samples_per_epoch": None,
        }
    X_all, source, variant, mean, std = expanded
    subject_of = dataset.subject[source]
    train_mask = subject_of != subject
    test_mask = ~train_mask
    test = (X_all[test_mask], source[test_mask], variant[test_mask])
    return {
        "train_subjects": train_subjects,
        "val_subjects": [subject],
        "normalisation": {"fitted_on": "all subjects, augmented (leak)", "mean": mean.tolist(),
                          "std": std.tolist()},
        "train": (X_all[train_mask], dataset.y[source][train_mask]),
        "select": (test[0], dataset.y[test[1]]),
        "test": test,
        "samples_per_epoch": int(np.sum(dataset.subject != subject)),
    }


def _reference_expansion(dataset: WindowDataset, seed: int) -> tuple:
    X_all, source = expand(dataset.X, seed)
    variant = np.repeat(np.arange(len(X_all) // len(dataset)), len(dataset))
    mean, std = fit_zscore(X_all)
    return apply_zscore(X_all, mean, std), source, variant, mean, std


def run_fold(
    dataset: WindowDataset,
    config: LosoConfig,
    subject: str,
    run_dir: Path,
    expanded: tuple | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Trains and scores one fold; writes its weights, then its JSON; returns the JSON content.

    Raises:
        FloatingPointError: when the trained model gives a non-finite probability (nothing
            of the fold is written).
    """
    seed = fold_seed(config.seed, subject)
    torch.manual_seed(seed)
    model = create_model(config.model, **config.model_kwargs)
    subjects = dataset.subjects
    chained_from = None
    if config.protocol == "reference":
        if expanded is None:
            expanded = _reference_expansion(dataset, config.seed)
        position = subjects.index(subject)
        if hasattr(model, "cnn") and position > 0:
            chained_from = subjects[position - 1]
            previous = _chain_path(run_dir, chained_from)
            if not previous.is_file():
                raise ValueError(
                    f"the reference protocol shares the CNN across folds in order: fold "
                    f"{subject} needs {previous}, written by fold {chained_from}; run that first"
                )
            model.cnn.load_state_dict(
                {k[len("cnn.") :]: v for k, v in _load_weights(previous).items()}
            )
    arrays = _fold_arrays(dataset, config, subject, seed, expanded)
    train_config = config.train
    if arrays["samples_per_epoch"] is not None:
        train_config = TrainConfig(
            **{**train_config.to_dict(), "samples_per_epoch": arrays["samples_per_epoch"],
               "online_augment": False}
        )
    generator = torch.Generator().manual_seed(seed)
    X_train, y_train = (torch.from_numpy(a) for a in arrays["train"])
    X_select, y_select = (torch.from_numpy(a) for a in arrays["select"])
    result = fit(
        model, X_train, y_train.long(), X_select, y_select.long(), train_config, generator,
        on_epoch=on_epoch, on_batch=on_batch,
    )
    X_test, source, variant = arrays["test"]
    prob = predict_proba(model, torch.from_numpy(X_test))
    select_prob = predict_proba(model, X_select)
    for name, values in (("held-out", prob), ("selection", select_prob)):
        bad = ~np.isfinite(values)
        if bad.any():
            raise FloatingPointError(
                f"fold {subject}: the trained {config.model} gives non-finite probabilities "
                f"for {int(bad.sum())} of {len(values)} {name} windows; nothing of this fold "
                "was written (lower --lr, or check the data with `poolwise pain windows`)"
            )
    threshold = choose_threshold(y_select.numpy(), select_prob)
    labels = dataset.y[source]
    norm = arrays["normalisation"]
    detector = DetectorConfig(
        model=config.model, model_kwargs=config.model_kwargs,
        channel_names=dataset.channel_names, frame_rate=float(dataset.frame_rate),
        window=dataset.window, hop=int(dataset.step), mean=norm["mean"], std=norm["std"],
        threshold=threshold,
        provenance={"protocol": config.protocol, "test_subject": subject, "seed": seed,
                    "poolwise_version": __version__},
    )
    weights = detector_bytes(detector, model.state_dict())
    weights_path = run_dir / f"fold_{subject}.safetensors"
    record = {
        "poolwise_version": __version__,
        # thread count and versions: float reductions, hence trajectories, depend on them
        "environment": {"torch": torch.__version__, "torch_threads": torch.get_num_threads()},
        "protocol": config.protocol,
        **({"protocol_note": REFERENCE_LABEL} if config.protocol == "reference" else {}),
        "model": config.model,
        "model_kwargs": config.model_kwargs,
        "n_parameters": count_parameters(model),
        "test_subject": subject,
        "test_group": str(dataset.group[dataset.subject == subject][0]),
        "train_subjects": arrays["train_subjects"],
        "val_subjects": arrays["val_subjects"],
        "seed": seed,
        "run_seed": config.seed,
        "train_config": train_config.to_dict(),
        "n_train_windows": len(X_train),
        "epoch_chosen": result.epoch_chosen,
        "history": result.history,
        "class_weights": result.class_weights,
        "normalisation": {**norm, "channels": list(dataset.channel_names)},
        "cnn_chained_from": chained_from,
        "test": {
            "window_index": source.tolist(),
            "labels": labels.tolist(),
            "probabilities": prob.tolist(),
            "exercise": dataset.exercise[source].tolist(),
            "augmentation_variant": variant.tolist(),
        },
        "threshold": {"value": threshold, "chosen_on": "val_subjects windows, best macro F1",
                      "note": "metrics use 0.5; the threshold is for deployment"},
        "metrics": binary_metrics(labels, prob),
        "metrics_original_windows": binary_metrics(labels[variant == 0], prob[variant == 0]),
        "weights": {"file": weights_path.name, "sha256": hashlib.sha256(weights).hexdigest()},
    }
    write_bytes(weights_path, weights)
    if config.protocol == "reference" and hasattr(model, "cnn"):
        cnn_state = {k: v for k, v in result.final_state.items() if k.startswith("cnn.")}
        chain = _chain_path(run_dir, subject)
        save_safetensors(chain, cnn_state, {"model": config.model,
                                            "model_kwargs": json.dumps(config.model_kwargs)})
        record["cnn_chain"] = {"file": str(chain.relative_to(run_dir)),
                               "sha256": sha256_file(chain)}
    write_json(fold_path(run_dir, subject), record)  # last: it marks the fold as finished
    return record


def finished_fold(run_dir: Path, subject: str) -> tuple[dict | None, str | None]:
    """The record of a finished fold, or None and why the fold must be (re)done.

    A fold is finished when its JSON parses and every file it records (the weights, and for
    the reference protocol the CNN chain) exists with the recorded sha256.
    """
    path = fold_path(run_dir, subject)
    if not path.is_file():
        return None, None
    try:
        record = read_json(path, "fold record")
    except ValueError as error:
        return None, str(error)
    for key in ("weights", "cnn_chain"):
        entry = record.get(key)
        if entry is None:
            if key == "weights":
                return None, f"{path.name} records no weights checksum"
            continue
        file = run_dir / entry["file"]
        if not file.is_file():
            return None, f"{file} is missing"
        if sha256_file(file) != entry["sha256"]:
            return None, f"{file} does not match the sha256 in {path.name} (truncated or changed)"
    return record, None


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


def _check_folds(dataset: WindowDataset, config: LosoConfig, subjects: Sequence[str]) -> None:
    """Raises ValueError, before any training, for a run that cannot go through: a model that
    cannot take the data's windows, a fold whose training windows hold one class only, or
    (clean protocol) a fold with no usable choice of selection subjects."""
    model = create_model(config.model, **config.model_kwargs).eval()
    try:
        with torch.inference_mode():
            model(torch.zeros(2, len(dataset.channel_names), dataset.window))
    except (ValueError, RuntimeError) as error:
        raise ValueError(
            f"model {config.model} cannot take this data's windows ({len(dataset.channel_names)} "
            f"channels x {dataset.window} frames): {error}") from None
    for subject in subjects:
        train = dataset.subject != subject
        if len(np.unique(dataset.y[train])) < 2:
            raise ValueError(f"fold {subject}: the other subjects' windows hold only class "
                             f"{int(dataset.y[train][0])}; a classifier cannot be fitted")
        if config.protocol == "clean":
            rng = np.random.default_rng(fold_seed(config.seed, subject))  # as _fold_arrays
            try:
                choose_select_subjects(dataset, [s for s in dataset.subjects if s != subject],
                                       config.n_select_subjects, rng)
            except ValueError as error:
                raise ValueError(f"fold {subject}: {error}") from None


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
        ValueError: for too few subjects, unknown folds or ``jobs < 1``, before any work.
    """
    run_dir = Path(run_dir)
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive number of processes, got {jobs!r}")
    if jobs > 1 and config.protocol == "reference":
        raise ValueError("the reference protocol chains folds in order: use jobs=1")
    if len(dataset.subjects) < config.n_select_subjects + 2:
        raise ValueError(
            f"LOSO needs at least {config.n_select_subjects + 2} subjects, "
            f"the data has {len(dataset.subjects)}"
        )
    subjects = resolve_folds(dataset.subjects, folds)
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
                _reference_expansion(dataset, config.seed)
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
