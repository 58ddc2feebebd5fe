"""Small synthetic cohorts for tests that train real folds: few windows keep them fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from poolwise.pain.data.dataset import WindowDataset
from poolwise.pain.data.readers import load_dataset
from poolwise.pain.data.synth import write_synthetic_cohort


def small_cohort(root: Path, *, n_subjects: int, seed: int, n_healthy: int = 2,
                 per_subject: int | None = None,
                 per_class: tuple[int, int] | None = None) -> WindowDataset:
    """A synthetic cohort written under ``root``, keeping of each subject its first
    ``per_subject`` windows, or its first ``per_class = (other, protective)`` windows of each
    class."""
    write_synthetic_cohort(root, n_subjects=n_subjects, seed=seed, n_healthy=n_healthy)
    dataset = load_dataset(root)
    keep = np.zeros(len(dataset), bool)
    for s in dataset.subjects:
        mine = dataset.subject == s
        if per_subject is not None:
            keep[np.flatnonzero(mine)[:per_subject]] = True
        for label, n in enumerate(per_class or ()):
            keep[np.flatnonzero(mine & (dataset.y == label))[:n]] = True
    return dataset.subset(keep)
