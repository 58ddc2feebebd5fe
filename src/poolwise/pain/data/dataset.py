"""One array file for a whole cohort: numpy3D windows plus per-window metadata.

A :class:`WindowDataset` is validated when it is made (and so when it is loaded): finite float
windows, integer class labels 0..K-1, one group per subject, positive frame rate and step,
unique channel and class names. It also carries ``skipped``: what the reader left out and why
(one entry per file and reason), so nothing is dropped without a record.

EmoPain's task is binary (:data:`BINARY_CLASSES`: 1 = protective); any other recording may have
K >= 2 classes, named by ``class_names`` (label k is ``class_names[k]``).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from poolwise._io import atomic_path
from poolwise._names import check_distinct
from poolwise.pain.constants import FRAME_RATE, STEP

_ARRAYS = ("X", "y", "subject", "group", "exercise")
BINARY_CLASSES = ("not protective", "protective")


@dataclass
class WindowDataset:
    """Windows of a cohort.

    Attributes:
        X: (n, channels, time) float32 windows.
        y: (n,) int64 class labels 0..K-1 (binary: 1 = protective).
        subject: (n,) subject ids.
        group: (n,) ``"healthy"`` or ``"CLBP"`` (or ``"unknown"``).
        exercise: (n,) exercise names.
        channel_names: Names of the channels of X, in order.
        frame_rate: Frames per second.
        step: Hop between consecutive windows, in frames.
        skipped: What the reader left out: ``{"file", "reason", "frames", "whole_file"}`` per
            file and reason (empty sessions, sessions or segments shorter than a window,
            excluded exercises); ``whole_file`` is True where the file gave no window.
        class_names: Name of each class, K >= 2 (default :data:`BINARY_CLASSES`).
    """

    X: np.ndarray
    y: np.ndarray
    subject: np.ndarray
    group: np.ndarray
    exercise: np.ndarray
    channel_names: tuple[str, ...]
    frame_rate: float = FRAME_RATE
    step: int = STEP
    skipped: tuple[dict, ...] = field(default_factory=tuple)
    class_names: tuple[str, ...] = BINARY_CLASSES

    def __post_init__(self) -> None:
        self.channel_names = tuple(str(c) for c in self.channel_names)
        self.class_names = tuple(str(c) for c in self.class_names)
        if len(self.class_names) < 2 or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names must name two or more distinct classes, got "
                             f"{list(self.class_names)}")
        self.skipped = tuple(self.skipped)
        n = len(self.X)
        if self.X.ndim != 3 or self.X.shape[1] != len(self.channel_names):
            raise ValueError(f"X must be (n, {len(self.channel_names)}, time), got {self.X.shape}")
        if self.X.shape[2] < 1 or self.X.shape[1] < 1:
            raise ValueError(f"X must hold at least one channel and one frame, got {self.X.shape}")
        repeated = sorted({c for c in self.channel_names if self.channel_names.count(c) > 1})
        if repeated:
            raise ValueError(f"channel names must be unique; repeated: {', '.join(repeated)}")
        if not 0 < float(self.frame_rate) < np.inf:
            raise ValueError(f"frame_rate must be a positive number of Hz, got {self.frame_rate}")
        if int(self.step) != self.step or self.step < 1:
            raise ValueError(f"step must be a positive number of frames, got {self.step}")
        for name in _ARRAYS[1:]:
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} windows")
        if self.X.dtype.kind != "f":
            raise ValueError(f"X must hold floating-point values, got dtype {self.X.dtype}")
        bad = ~np.isfinite(self.X)
        if bad.any():
            i, c, t = np.argwhere(bad)[0]
            raise ValueError(f"X holds {int(bad.sum())} NaN/inf values (first: window {i}, "
                             f"channel {self.channel_names[c]}, frame {t}); windows must be "
                             "finite: fix or drop those frames before windowing")
        self.y = _labels(np.asarray(self.y), self.class_names)
        self.subject = np.asarray(self.subject).astype(str)
        self.group = np.asarray(self.group).astype(str)
        check_distinct(np.unique(self.subject).tolist(), "subject", "the windows")
        pairs = set(zip(self.subject.tolist(), self.group.tolist(), strict=True))
        if len(pairs) != len({s for s, _ in pairs}):
            twice = sorted({s for s, _ in pairs if sum(s == t for t, _ in pairs) > 1})
            raise ValueError(f"subject(s) {', '.join(twice[:5])} appear in more than one group")

    def __len__(self) -> int:
        return len(self.X)

    @property
    def window(self) -> int:
        return self.X.shape[2]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def subjects(self) -> list[str]:
        return sorted(set(self.subject.tolist()))

    def subset(self, mask: np.ndarray) -> WindowDataset:
        return WindowDataset(
            *(getattr(self, name)[mask] for name in _ARRAYS),
            channel_names=self.channel_names,
            frame_rate=self.frame_rate,
            step=self.step,
            skipped=self.skipped,
            class_names=self.class_names,
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
                skipped=np.array(json.dumps(list(self.skipped), sort_keys=True)),
                class_names=np.array(self.class_names),
            )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> WindowDataset:
        """Reads a file written by :meth:`save` (no pickles, whatever the file holds).

        Raises:
            ValueError: naming the file, when it is not a window file or its content is invalid.
        """
        path = Path(path)
        hint = "make one with `poolwise pain windows`"
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path}: not a poolwise window file (.npz); {hint}")
        try:
            with np.load(path, allow_pickle=False) as f:
                missing = [k for k in (*_ARRAYS, "channel_names") if k not in f]
                if missing:
                    raise ValueError(f"not a poolwise window dataset (missing {missing}); {hint}")
                return cls(
                    *(f[name] for name in _ARRAYS),
                    channel_names=tuple(f["channel_names"].tolist()),
                    frame_rate=float(f["frame_rate"]) if "frame_rate" in f else FRAME_RATE,
                    step=int(f["step"]) if "step" in f else STEP,
                    skipped=json.loads(str(f["skipped"])) if "skipped" in f else (),
                    class_names=(tuple(f["class_names"].tolist()) if "class_names" in f
                                 else BINARY_CLASSES),
                )
        except ValueError as error:
            if "pickle" in str(error):  # numpy's advice here is to load unsafely: never
                error = ValueError(f"it holds Python objects, which poolwise never unpickles; "
                                   f"{hint}")
            raise ValueError(f"{path}: {error}") from None
        except (OSError, zipfile.BadZipFile, EOFError, KeyError) as error:
            raise ValueError(f"{path}: unreadable window file ({error}); it may be truncated: "
                             f"{hint}") from None

    @classmethod
    def concatenate(cls, parts: list[WindowDataset]) -> WindowDataset:
        if not parts:
            raise ValueError("no windows to concatenate")
        first = parts[0]
        for part in parts[1:]:
            if part.channel_names != first.channel_names or part.window != first.window:
                raise ValueError("cannot concatenate datasets with different channels or windows")
        for part in parts[1:]:
            if part.frame_rate != first.frame_rate or part.step != first.step:
                raise ValueError("cannot concatenate datasets with different frame rates or "
                                 "steps")
            if part.class_names != first.class_names:
                raise ValueError(f"cannot concatenate datasets with different classes "
                                 f"({list(first.class_names)} and {list(part.class_names)})")
        return cls(
            *(np.concatenate([getattr(p, name) for p in parts]) for name in _ARRAYS),
            channel_names=first.channel_names,
            frame_rate=first.frame_rate,
            step=first.step,
            skipped=tuple(entry for p in parts for entry in p.skipped),
            class_names=first.class_names,
        )

    def skipped_summary(self) -> dict[str, int]:
        """Frames left out per reason kind (the part of each reason before the colon)."""
        totals: dict[str, int] = {}
        for entry in self.skipped:
            kind = entry["reason"].split(":", 1)[0]
            totals[kind] = totals.get(kind, 0) + int(entry.get("frames", 0))
        return totals


def _labels(y: np.ndarray, class_names: tuple[str, ...]) -> np.ndarray:
    """Validated labels as int64 0..K-1; integral floats and bools are accepted, nothing is
    cast."""
    k = len(class_names)
    meaning = ("0 (not protective) or 1 (protective)" if class_names == BINARY_CLASSES
               else f"a class index 0..{k - 1} ({', '.join(class_names)})")
    if y.ndim != 1:
        raise ValueError(f"y must be one label per window, got shape {y.shape}")
    if y.dtype.kind not in "biuf":
        raise ValueError(f"labels must be integers, {meaning}; got dtype {y.dtype}")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"label {y[i]:g} of window {i} is not a class label; labels must "
                             f"be {meaning}")
    bad = (y < 0) | (y >= k)
    if bad.any():
        i = int(np.argmax(bad))
        hint = ("; for more than two classes pass class_names (one name per class)"
                if class_names == BINARY_CLASSES else "")
        raise ValueError(f"label {y[i]:g} of window {i} is not {meaning} (values found: "
                         f"{np.unique(y)[:6].tolist()}){hint}")
    return y.astype(np.int64)
