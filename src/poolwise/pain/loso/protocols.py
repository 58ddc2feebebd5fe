"""Which subjects train, select and test in one fold, and how its windows are normalised.

Three protocols, each an object (:class:`Protocol`, made by :func:`make_protocol`) that owns its
folds, the checks a run must pass before any training, the windows of each fold
(a :class:`~poolwise.pain.loso.splits.FoldData`) and the note its reports carry:

- ``"clean"`` (LOSO, leakage-free): the held-out subject is the test set; selection subjects
  are drawn from the others (:func:`~poolwise.pain.loso.splits.choose_select_subjects`); the
  z-score is fitted on the remaining training subjects only; augmentation happens online, on
  training windows only.
- ``"reference"`` (LOSO with the leaks of the authors' code, to measure them): the seven-fold
  augmentation and the z-score are applied to every subject before the split
  (:func:`~poolwise.pain.loso.splits.reference_expansion`), and the held-out subject is both
  the selection and the test set. Its numbers are optimistic by construction and labelled so
  (:data:`REFERENCE_LABEL`).
- ``"challenge"`` (the EmoPain 2020 challenge's fixed split): one fold; training, validation and
  test subjects come from a split file (:func:`~poolwise.pain.loso.splits.read_split`); the
  z-score is fitted on the training subjects, the epoch is chosen on the validation subjects,
  and the test subjects are scored once.

Split file: JSON with three lists of subject ids,
``{"train": [...], "validation": [...], "test": [...]}``; each subject in at most one list,
every one of them in the data. The challenge's own sizes are 10 CLBP + 6 healthy (train),
4 + 3 (validation), 3 + 5 (test).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from poolwise.pain.data.dataset import WindowDataset
from poolwise.pain.loso.splits import (
    CHALLENGE_FOLD,
    FoldData,
    challenge_fold,
    check_split,
    choose_select_subjects,
    clean_fold,
    fold_seed,
    reference_expansion,
    reference_fold,
    resolve_folds,
)

REFERENCE_LABEL = (
    "REFERENCE (leaky) protocol of the authors' code: normalisation and augmentation before the "
    "split, held-out subject used for model selection, CNN shared across folds. Optimistic by "
    "construction; not an estimate of performance on new people."
)
CHALLENGE_LABEL = (
    "CHALLENGE protocol: one fixed split of the subjects into training, validation (model "
    "selection) and test (scored once); not leave-one-subject-out."
)


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
