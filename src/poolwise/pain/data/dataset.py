"""One array file for a whole cohort: numpy3D windows plus per-window metadata."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poolwise._io import atomic_path

_ARRAYS = ("X", "y", "subject", "group", "exercise")


@dataclass
class WindowDataset:
    """Windows of a cohort.

    Attributes:
        X: (n, channels, time) float32 windows.
        y: (n,) int64 labels, 1 = protective.
        subject: (n,) subject ids.
        group: (n,) ``"healthy"`` or ``"CLBP"`` (or ``"unknown"``).
        exercise: (n,) exercise names.
        channel_names: Names of the channels of X, in order.
        frame_rate: Frames per second.
        step: Hop between consecutive windows, in frames.
    """

    X: np.ndarray
    y: np.ndarray
    subject: np.ndarray
    group: np.ndarray
    exercise: np.ndarray
    channel_names: tuple[str, ...]
    frame_rate: float = 60.0
    step: int = 45

    def __post_init__(self) -> None:
        n = len(self.X)
        if self.X.ndim != 3 or self.X.shape[1] != len(self.channel_names):
            raise ValueError(f"X must be (n, {len(self.channel_names)}, time), got {self.X.shape}")
        for name in _ARRAYS[1:]:
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} windows")

    def __len__(self) -> int:
        return len(self.X)

    @property
    def window(self) -> int:
        return self.X.shape[2]

    @property
    def subjects(self) -> list[str]:
        return sorted(set(self.subject.tolist()))

    def subset(self, mask: np.ndarray) -> WindowDataset:
        return WindowDataset(
            *(getattr(self, name)[mask] for name in _ARRAYS),
            channel_names=self.channel_names,
            frame_rate=self.frame_rate,
            step=self.step,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Writes one .npz file atomically (a temporary file, then a rename)."""
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                **{name: getattr(self, name) for name in _ARRAYS},
                channel_names=np.array(self.channel_names),
                frame_rate=np.array(self.frame_rate),
                step=np.array(self.step),
            )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> WindowDataset:
        """Reads a file written by :meth:`save` (no pickles)."""
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in (*_ARRAYS, "channel_names") if k not in f]
            if missing:
                raise ValueError(f"{path}: not a poolwise window dataset (missing {missing})")
            return cls(
                *(f[name] for name in _ARRAYS),
                channel_names=tuple(f["channel_names"].tolist()),
                frame_rate=float(f["frame_rate"]),
                step=int(f["step"]),
            )

    @classmethod
    def concatenate(cls, parts: list[WindowDataset]) -> WindowDataset:
        if not parts:
            raise ValueError("no windows to concatenate")
        first = parts[0]
        for part in parts[1:]:
            if part.channel_names != first.channel_names or part.window != first.window:
                raise ValueError("cannot concatenate datasets with different channels or windows")
        return cls(
            *(np.concatenate([getattr(p, name) for p in parts]) for name in _ARRAYS),
            channel_names=first.channel_names,
            frame_rate=first.frame_rate,
            step=first.step,
        )
