"""The subjects and windows of one fold: the split file of the challenge protocol, the choice
of selection subjects, each protocol's :class:`FoldData` (training, selection and test windows
with their normalisation), fold seeds and the fold names a run may ask for."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poolwise._io import read_json
from poolwise.pain.augment import apply_zscore, expand, fit_zscore
from poolwise.pain.data.dataset import WindowDataset

CHALLENGE_FOLD = "challenge"
SPLIT_PARTS = ("train", "validation", "test")


@dataclass(frozen=True)
class FoldData:
    """The windows of one fold, normalised as its protocol says.

    ``test_index`` and ``test_variant`` say, per test window, which window of the dataset it
    is (or was augmented from) and which augmentation copy it is (0 = the original).
    ``samples_per_epoch`` overrides the training draw per epoch (the reference protocol draws
    as many as there are un-augmented training windows), None otherwise.
    """

    name: str
    train_subjects: list[str]
    val_subjects: list[str]
    test_subjects: list[str]
    normalisation: dict
    X_train: np.ndarray
    y_train: np.ndarray
    X_select: np.ndarray
    y_select: np.ndarray
    X_test: np.ndarray
    test_index: np.ndarray
    test_variant: np.ndarray
    samples_per_epoch: int | None = None


def read_split(path: str | Path, subjects: Sequence[str]) -> dict[str, list[str]]:
    """A challenge split file, checked against the data's ``subjects``.

    Raises:
        ValueError: naming the file and the value, for a file that is not the documented JSON,
            a missing or empty part, an unknown subject, or a subject in two parts.
    """
    path = Path(path)
    split = read_json(path, "challenge split")
    return check_split(split, subjects, where=str(path))


def check_split(split: object, subjects: Sequence[str], where: str = "split") -> dict:
    form = '{"train": [...], "validation": [...], "test": [...]} (lists of subject ids)'
    if not isinstance(split, dict) or set(split) != set(SPLIT_PARTS):
        keys = sorted(split) if isinstance(split, dict) else type(split).__name__
        raise ValueError(f"{where}: a split is {form}; got {keys}")
    known = set(subjects)
    seen: dict[str, str] = {}
    for part in SPLIT_PARTS:
        ids = split[part]
        if not isinstance(ids, list) or not ids or not all(isinstance(s, str) for s in ids):
            raise ValueError(f"{where}: {part!r} must be a non-empty list of subject ids, got "
                             f"{ids!r}")
        for subject in ids:
            if subject not in known:
                raise ValueError(f"{where}: {part} subject {subject!r} is not in the data "
                                 f"(subjects: {', '.join(sorted(known)[:6])}, ...)")
            if subject in seen:
                raise ValueError(f"{where}: subject {subject!r} is in both {seen[subject]!r} "
                                 f"and {part!r}; each subject belongs to one part")
            seen[subject] = part
    return {part: list(split[part]) for part in SPLIT_PARTS}


def choose_select_subjects(
    dataset: WindowDataset, train_subjects: Sequence[str], n: int, rng: np.random.Generator
) -> list[str]:
    """``n`` training subjects, spread over groups in proportion, holding a window of a class
    other than 0 (binary: a protective window).

    The subjects left for fitting must hold every class of the data.
    """
    if n >= len(train_subjects):
        raise ValueError(f"cannot hold out {n} selection subjects from {len(train_subjects)}")
    group_of = {s: str(dataset.group[dataset.subject == s][0]) for s in train_subjects}
    classes = {s: set(np.unique(dataset.y[dataset.subject == s]).tolist())
               for s in train_subjects}
    groups = sorted(set(group_of.values()))
    members = {g: [s for s in train_subjects if group_of[s] == g] for g in groups}
    shares = np.array([len(members[g]) for g in groups], dtype=float) * n / len(train_subjects)
    counts = np.floor(shares).astype(int)
    for i in np.argsort(-(shares - counts))[: n - counts.sum()]:
        counts[i] += 1
    every = set(range(dataset.n_classes))
    for _ in range(100):
        chosen = [
            s
            for g, k in zip(groups, counts, strict=True)
            for s in rng.choice(members[g], k, replace=False)
        ]
        rest = [s for s in train_subjects if s not in chosen]
        if (any(max(classes[s]) > 0 for s in chosen)
                and set().union(*(classes[s] for s in rest)) == every):
            return sorted(str(s) for s in chosen)
    what = "protective windows" if dataset.n_classes == 2 else "windows of every class"
    raise ValueError(
        f"no choice of {n} selection subjects among {len(train_subjects)} leaves {what} in the "
        "fitting subjects and a window of a class other than 0 in the selection; use more "
        "subjects or fewer --select-subjects"
    )


def clean_fold(dataset: WindowDataset, subject: str, n_select: int,
               rng: np.random.Generator) -> FoldData:
    train_subjects = [s for s in dataset.subjects if s != subject]
    select = choose_select_subjects(dataset, train_subjects, n_select, rng)
    fitting = sorted(set(train_subjects) - set(select))
    return _split_fold(dataset, subject, train_subjects, fitting, select, [subject])


def challenge_fold(dataset: WindowDataset, split: dict[str, list[str]]) -> FoldData:
    return _split_fold(dataset, CHALLENGE_FOLD, list(split["train"]), list(split["train"]),
                       list(split["validation"]), list(split["test"]))


def _split_fold(dataset: WindowDataset, name: str, train_subjects: list[str],
                fitting: list[str], select: list[str], test: list[str]) -> FoldData:
    fit_mask = np.isin(dataset.subject, fitting)
    select_mask = np.isin(dataset.subject, select)
    test_mask = np.isin(dataset.subject, test)
    mean, std = fit_zscore(dataset.X[fit_mask])
    return FoldData(
        name=name,
        train_subjects=train_subjects,
        val_subjects=list(select),
        test_subjects=list(test),
        normalisation={"fitted_on": fitting, "mean": mean.tolist(), "std": std.tolist()},
        X_train=apply_zscore(dataset.X[fit_mask], mean, std),
        y_train=dataset.y[fit_mask],
        X_select=apply_zscore(dataset.X[select_mask], mean, std),
        y_select=dataset.y[select_mask],
        X_test=apply_zscore(dataset.X[test_mask], mean, std),
        test_index=np.flatnonzero(test_mask),
        test_variant=np.zeros(int(test_mask.sum()), dtype=np.int64),
    )


def reference_expansion(dataset: WindowDataset, seed: int) -> tuple:
    """Every window and its augmented copies, z-scored with statistics of them all (the leak):
    ``(X, source window index, variant, mean, std)``."""
    X_all, source = expand(dataset.X, seed)
    variant = np.repeat(np.arange(len(X_all) // len(dataset)), len(dataset))
    mean, std = fit_zscore(X_all)
    return apply_zscore(X_all, mean, std), source, variant, mean, std


def reference_fold(dataset: WindowDataset, subject: str, expanded: tuple) -> FoldData:
    X_all, source, variant, mean, std = expanded
    train_mask = dataset.subject[source] != subject
    test_mask = ~train_mask
    return FoldData(
        name=subject,
        train_subjects=[s for s in dataset.subjects if s != subject],
        val_subjects=[subject],
        test_subjects=[subject],
        normalisation={"fitted_on": "all subjects, augmented (leak)", "mean": mean.tolist(),
                       "std": std.tolist()},
        X_train=X_all[train_mask],
        y_train=dataset.y[source][train_mask],
        X_select=X_all[test_mask],
        y_select=dataset.y[source][test_mask],
        X_test=X_all[test_mask],
        test_index=source[test_mask],
        test_variant=variant[test_mask],
        samples_per_epoch=int(np.sum(dataset.subject != subject)),
    )


def fold_seed(seed: int, name: str) -> int:
    """A per-fold seed that depends on the run seed and the fold's name (the held-out subject)
    only."""
    state = np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)
    return int(state[0])


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
