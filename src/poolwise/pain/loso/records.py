"""LOSO run folders as read back: :class:`Run` (its ``run.json`` and finished fold records)
and the held-out windows of its folds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poolwise._io import read_json
from poolwise.pain.data.dataset import BINARY_CLASSES
from poolwise.pain.loso.folds import fold_records
from poolwise.pain.loso.protocols import Protocol, protocol_type


@dataclass
class Run:
    path: Path
    config: dict
    folds: list[dict]
    seed_in_label: bool = False  # set where one report holds several seeds of a run

    @property
    def model(self) -> str:
        return self.config["model"]

    @property
    def protocol(self) -> str:
        return self.config["protocol"]

    @property
    def evaluation(self) -> type[Protocol]:
        return protocol_type(self.protocol)

    @property
    def label(self) -> str:
        seed = f" seed {self.config['seed']}" if self.seed_in_label else ""
        return f"{self.model}{seed} [{self.evaluation.label}]"

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.config["data"].get("class_names", BINARY_CLASSES))

    @property
    def complete(self) -> bool:
        return len(self.folds) == self.evaluation.fold_total(self.config["data"]["subjects"])


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run folders at or under ``paths`` (sorted, each once)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such run folder")
        found += [p.parent for p in sorted(path.rglob("run.json"))]
    if not found:
        raise FileNotFoundError(f"no run.json under {', '.join(map(str, paths))}")
    return sorted(dict.fromkeys(found))


def load_run(path: str | Path) -> Run:
    path = Path(path)
    config = read_json(path / "run.json", "run configuration")
    folds = []
    for file in fold_records(path, config):
        record = read_json(file, "fold record")
        for key in ("test_subject", "test", "metrics"):
            if key not in record:
                raise ValueError(f"{file}: not a poolwise fold file (no {key!r})")
        folds.append(record)
    return Run(path, config, folds)


def fold_windows(fold: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A fold's test labels, probabilities ((n,) or (n, K)), subjects and augmentation copies."""
    test = fold["test"]
    n = len(test["labels"])
    return (np.asarray(test["labels"], np.int64),
            np.asarray(test["probabilities"], np.float64),
            np.asarray(test.get("subject", [fold["test_subject"]] * n), str),
            np.asarray(test.get("augmentation_variant", [0] * n), np.int64))


def test_windows(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every fold's test windows together: labels, probabilities, subjects, augmentation
    copies."""
    parts = [fold_windows(f) for f in run.folds]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))


def subject_cohorts(run: Run) -> dict[str, str]:
    groups: dict[str, str] = {}
    for f in run.folds:
        groups.update(f.get("test_subjects", {f["test_subject"]: f["test_group"]}))
    return groups
