"""Which subjects train, select and test in one fold, and how its windows are normalised.

Three protocols, each an object (:class:`Protocol`, made by :func:`make_protocol`) that owns its
folds, the checks a run must pass before any training, the windows of each fold
(a :class:`FoldData`) and the note its reports carry:

- ``"clean"`` (LOSO, leakage-free): the held-out subject is the test set; selection subjects are
  drawn from the others (:func:`choose_select_subjects`); the z-score is fitted on the remaining
  training subjects only; augmentation happens online, on training windows only.
- ``"reference"`` (LOSO with the leaks of the authors' code, to measure them): the seven-fold
  augmentation and the z-score are applied to every subject before the split
  (:func:`reference_expansion`), and the held-out subject is both the selection and the test
  set. Its numbers are optimistic by construction and labelled so (:data:`REFERENCE_LABEL`).
- ``"challenge"`` (the EmoPain 2020 challenge's fixed split): one fold; training, validation and
  test subjects come from a split file (:func:`read_split`); the z-score is fitted on the
  training subjects, the epoch is chosen on the validation subjects, and the test subjects are
  scored once.

Split file: JSON with three lists of subject ids,
``{"train": [...], "validation": [...], "test": [...]}``; each subject in at most one list,
every one of them in the data. The challenge's own sizes are 10 CLBP + 6 healthy (train),
4 + 3 (validation), 3 + 5 (test).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from poolwise._io import read_json
from poolwise.pain.augment import apply_zscore, expand, fit_zscore
from poolwise.pain.data.dataset import WindowDataset

CHALLENGE_FOLD = "challenge"
SPLIT_PARTS = ("train", "validation", "test")
REFERENCE_LABEL = (
    "REFERENCE (leaky) protocol of the authors' code: normalisation and augmentation before the "
    "split, held-out subject used for model selection, CNN shared across folds. Optimistic by "
    "construction; not an estimate of performance on new people."
)
CHALLENGE_LABEL = (
    "CHALLENGE protocol: one fixed split of the subjects into training, validation (model "
    "selection) and test (scored once); not leave-one-subject-out."
)


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


class Protocol:
    """How a pain run is evaluated: its folds, its checks, each fold's windows, its notes.

    Class attributes describe the protocol for reports (which hold only its name); instances
    carry the run's parameters (selection subjects, seed, split).
    """

    name: ClassVar[str]
    label: ClassVar[str]  # how report rows are marked
    note: ClassVar[str | None] = None  # stored in run.json and every fold record
    report_note: ClassVar[str | None] = None  # the paragraph a report adds for its rows
    independent_folds: ClassVar[bool] = True  # folds may run in parallel, in any order
    takes_split: ClassVar[bool] = False
    shares_cnn: ClassVar[bool] = False  # folds chain the CNN (the reference leak)

    @classmethod
    def from_settings(cls, *, n_select_subjects: int, seed: int, split: dict | None
                      ) -> Protocol:
        """The protocol with a run's parameters (it keeps the ones it uses)."""
        raise NotImplementedError

    def fold_names(self, subjects: Sequence[str], folds: Sequence[str] | None = None
                   ) -> list[str]:
        """The folds a run does: by default one per subject held out (``folds`` selects)."""
        return resolve_folds(subjects, folds)

    @classmethod
    def fold_total(cls, subjects: Sequence[str]) -> int:
        """How many folds a complete run has."""
        return len(cls.every_fold(subjects))

    @classmethod
    def every_fold(cls, subjects: Sequence[str]) -> list[str]:
        """The names of every fold of a complete run on ``subjects``."""
        return list(subjects)

    def check(self, dataset: WindowDataset) -> None:
        """Raises ValueError, before any work, for data the protocol cannot split."""

    def training_subjects(self, dataset: WindowDataset, name: str) -> tuple[np.ndarray, str]:
        """Mask of the windows fold ``name`` trains on, and how to name them in a message."""
        return dataset.subject != name, f"fold {name}: the other subjects"

    def check_fold(self, dataset: WindowDataset, name: str) -> None:
        """Raises ValueError, before any training, for a fold that cannot be fitted: its
        training windows lack a class."""
        train, where = self.training_subjects(dataset, name)
        lacking = sorted(set(range(dataset.n_classes)) - set(np.unique(dataset.y[train]).tolist()))
        if lacking:
            raise ValueError(f"{where} have no window of class {lacking[0]} "
                             f"({dataset.class_names[lacking[0]]!r}); a classifier of "
                             f"{dataset.n_classes} classes cannot be fitted on them")

    def prepare(self, dataset: WindowDataset) -> object:
        """What every fold of a run shares (computed once per process), or None."""
        return None

    def fold(self, dataset: WindowDataset, name: str, seed: int,
             prepared: object = None) -> FoldData:
        """The windows of fold ``name`` (``seed``: the fold's seed, :func:`fold_seed`)."""
        raise NotImplementedError


@dataclass(frozen=True)
class _Loso(Protocol):
    n_select: int = 3
    seed: int = 0  # the run's seed

    @classmethod
    def from_settings(cls, *, n_select_subjects: int, seed: int, split: dict | None) -> _Loso:
        return cls(n_select=n_select_subjects, seed=seed)

    def check(self, dataset: WindowDataset) -> None:
        if len(dataset.subjects) < self.n_select + 2:
            raise ValueError(f"LOSO needs at least {self.n_select + 2} subjects, the data has "
                             f"{len(dataset.subjects)}")


@dataclass(frozen=True)
class Clean(_Loso):
    """Leave-one-subject-out without leaks (see the module's description)."""

    name: ClassVar[str] = "clean"
    label: ClassVar[str] = "clean"

    def check_fold(self, dataset: WindowDataset, name: str) -> None:
        super().check_fold(dataset, name)
        rng = np.random.default_rng(fold_seed(self.seed, name))
        try:  # drawn as the fold draws it
            choose_select_subjects(dataset, [s for s in dataset.subjects if s != name],
                                   self.n_select, rng)
        except ValueError as error:
            raise ValueError(f"fold {name}: {error}") from None

    def fold(self, dataset: WindowDataset, name: str, seed: int,
             prepared: object = None) -> FoldData:
        return clean_fold(dataset, name, self.n_select, np.random.default_rng(seed))


@dataclass(frozen=True)
class Reference(_Loso):
    """Leave-one-subject-out with the leaks of the authors' code, to measure them."""

    name: ClassVar[str] = "reference"
    label: ClassVar[str] = "REFERENCE (leaky)"
    note: ClassVar[str | None] = REFERENCE_LABEL
    report_note: ClassVar[str | None] = (
        "**Rows marked REFERENCE (leaky) reproduce the data leaks of the authors' code** "
        "(normalisation and seven-fold augmentation before the split, the held-out subject "
        "picks the epoch, one CNN shared by all folds; their test windows include the "
        "augmented copies). They measure the optimism of that protocol; they are not "
        "estimates of performance on new people.")
    independent_folds: ClassVar[bool] = False
    shares_cnn: ClassVar[bool] = True

    def prepare(self, dataset: WindowDataset) -> tuple:
        return reference_expansion(dataset, self.seed)

    def fold(self, dataset: WindowDataset, name: str, seed: int,
             prepared: object = None) -> FoldData:
        return reference_fold(dataset, name, prepared or self.prepare(dataset))


@dataclass(frozen=True)
class Challenge(Protocol):
    """The EmoPain 2020 challenge's fixed split: one fold."""

    name: ClassVar[str] = "challenge"
    label: ClassVar[str] = "challenge split"
    note: ClassVar[str | None] = CHALLENGE_LABEL
    report_note: ClassVar[str | None] = (
        "Rows marked [challenge split] train once on the split's training subjects, choose "
        "the epoch on its validation subjects and score its test subjects once: their folds "
        "column is 1/1 and their per-subject values cover the test subjects only.")
    takes_split: ClassVar[bool] = True
    split: dict | None = None

    @classmethod
    def from_settings(cls, *, n_select_subjects: int, seed: int, split: dict | None
                      ) -> Challenge:
        return cls(split=split)

    def fold_names(self, subjects: Sequence[str], folds: Sequence[str] | None = None
                   ) -> list[str]:
        if folds:
            raise ValueError("the challenge protocol has one fold; --folds does not apply")
        return [CHALLENGE_FOLD]

    @classmethod
    def every_fold(cls, subjects: Sequence[str]) -> list[str]:
        return [CHALLENGE_FOLD]

    def check(self, dataset: WindowDataset) -> None:
        check_split(self.split, dataset.subjects)

    def training_subjects(self, dataset: WindowDataset, name: str) -> tuple[np.ndarray, str]:
        return np.isin(dataset.subject, self.split["train"]), "the split's training subjects"

    def fold(self, dataset: WindowDataset, name: str, seed: int,
             prepared: object = None) -> FoldData:
        return challenge_fold(dataset, self.split)


PROTOCOL_TYPES: dict[str, type[Protocol]] = {p.name: p for p in (Clean, Reference, Challenge)}
PROTOCOLS = tuple(PROTOCOL_TYPES)


def protocol_type(name: str) -> type[Protocol]:
    """The protocol called ``name`` (its class: notes and labels without a run's parameters).

    Raises:
        ValueError: for a name that is not one of :data:`PROTOCOLS`.
    """
    if name not in PROTOCOL_TYPES:
        raise ValueError(f"protocol {name!r} is not one of {PROTOCOLS}")
    return PROTOCOL_TYPES[name]


def make_protocol(name: str, *, n_select_subjects: int = 3, seed: int = 0,
                  split: dict | None = None) -> Protocol:
    """The protocol called ``name`` with a run's parameters (each protocol keeps the ones it
    uses).

    Raises:
        ValueError: for an unknown name, or a split given to a protocol other than the
            challenge's (or none to it).
    """
    kind = protocol_type(name)
    if kind.takes_split != (split is not None):
        raise ValueError("the challenge protocol, and only it, takes a split of the subjects "
                         "(a split file: --split FILE)")
    return kind.from_settings(n_select_subjects=n_select_subjects, seed=seed, split=split)
