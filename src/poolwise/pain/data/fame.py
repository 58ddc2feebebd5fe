"""Raw per-session FAME ``.mat`` files of the EmoPain release (one matrix per session: signals,
exercise and rater columns at 60 Hz) into windows, every left-out frame recorded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from poolwise.pain.constants import FRAME_RATE, STEP, WINDOW
from poolwise.pain.data.dataset import WindowDataset
from poolwise.pain.data.files import (
    DataError,
    check_unique_subjects,
    check_window_args,
    concatenate_or_explain,
    load_mat_matrix,
    log,
    skipped_record,
)
from poolwise.pain.data.layout import CHANNEL_NAMES, FameLayout
from poolwise.pain.data.windows import (
    cut_windows,
    exercise_segments,
    fuse_raters,
    window_labels,
    window_starts,
)

GROUP_FOLDERS = {"randomised C": "healthy", "randomised P": "CLBP"}


def _check_finite(path: Path, matrix: np.ndarray, columns: tuple[int, ...], layout) -> None:
    block = matrix[:, columns]
    bad = ~np.isfinite(block)
    if bad.any():
        row, j = np.argwhere(bad)[0]
        raise DataError(
            f"{path}: NaN/Inf in {layout.column_role(columns[j])} at frame {row} "
            f"({int(bad[:, j].sum())} bad frames in that column)"
        )


def _check_values(path, matrix, columns, allowed, what, expected, layout) -> None:
    block = matrix[:, list(columns)]
    bad = ~np.isin(block, allowed)
    if bad.any():
        row, j = np.argwhere(bad)[0]
        raise DataError(
            f"{path}: {what} {block[row, j]:g} {expected} in "
            f"{layout.column_role(columns[j])} at frame {row}"
        )


def matrix_frame_labels(matrix: np.ndarray, layout: FameLayout, *, min_raters: int = 2,
                        single_rater_value2_behaviour0: bool = True) -> np.ndarray:
    """The protective label (bool) of every frame of a raw FAME matrix, fused from its raters."""
    grid = np.zeros((len(matrix), layout.n_raters * layout.n_behaviours), dtype=np.int8)
    grid[:, [r * layout.n_behaviours + b for r, b, _ in layout.rater_cells]] = matrix[
        :, list(layout.raters)
    ]
    return fuse_raters(
        grid.reshape(len(matrix), layout.n_raters, layout.n_behaviours),
        min_raters=min_raters,
        single_rater_value2_behaviour0=single_rater_value2_behaviour0,
    )


def window_matrix(
    matrix: np.ndarray,
    layout: FameLayout,
    *,
    window: int = WINDOW,
    step: int = STEP,
    min_raters: int = 2,
    single_rater_value2_behaviour0: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows, labels and exercise names of one validated raw FAME matrix (vectorised)."""
    frame_labels = matrix_frame_labels(
        matrix, layout, min_raters=min_raters,
        single_rater_value2_behaviour0=single_rater_value2_behaviour0)
    names = np.array(layout.exercises)
    used = np.flatnonzero(np.isin(names, list(layout.used_exercises)))
    segments = exercise_segments(matrix[:, [layout.exercise_start + i for i in used]])
    segments[:, 2] = used[segments[:, 2]]
    starts, seg_index = window_starts(segments, window, step)
    signals = matrix[:, list(layout.signals)].astype(np.float32)
    return (
        np.ascontiguousarray(cut_windows(signals, starts, window)),
        window_labels(frame_labels, starts, window),
        names[segments[seg_index, 2]],
    )


def left_out(matrix: np.ndarray, layout: FameLayout, window: int) -> list[tuple[str, int]]:
    """(reason, frames) of what windowing one raw matrix leaves out by design."""
    names = np.array(layout.exercises)
    indicators = matrix[:, list(layout.exercise_columns)] != 0
    reasons = []
    for i in np.flatnonzero(~np.isin(names, list(layout.used_exercises))):
        if indicators[:, i].any():
            reasons.append((f"excluded exercise: {names[i]}", int(indicators[:, i].sum())))
    used = np.flatnonzero(np.isin(names, list(layout.used_exercises)))
    segments = exercise_segments(indicators[:, used])
    short = segments[segments[:, 1] - segments[:, 0] < window]
    if len(short):
        counts = {}
        for start, stop, i in short:
            counts[names[used[i]]] = counts.get(names[used[i]], 0) + int(stop - start)
        for name, frames in sorted(counts.items()):
            reasons.append((f"segment shorter than a window ({window} frames): {name}", frames))
    return reasons


def read_fame_session(
    path: str | os.PathLike,
    *,
    layout: FameLayout | None = None,
    subject: str | None = None,
    group: str = "unknown",
    window: int = WINDOW,
    step: int = STEP,
    min_raters: int = 2,
    single_rater_value2_behaviour0: bool = True,
) -> WindowDataset:
    """Windows of one raw session file.

    An empty session, or one without a full window, gives a dataset with no windows whose
    ``skipped`` says why (and a logged warning naming the file).
    """
    check_window_args(window, step)
    layout = layout or FameLayout()
    path = Path(path)
    matrix = load_mat_matrix(path)
    if matrix.shape[0] >= layout.n_columns and matrix.shape[1] > matrix.shape[0]:
        raise DataError(
            f"{path}: the matrix has {matrix.shape[0]} rows and {matrix.shape[1]} columns; it "
            "looks transposed (frames must be rows, the FAME layout needs "
            f"{layout.n_columns} columns): transpose it before saving"
        )
    if matrix.shape[1] < layout.n_columns:
        hint = (" (the matrix looks transposed: frames must be rows)"
                if matrix.shape[0] >= layout.n_columns > matrix.shape[1] else "")
        raise DataError(
            f"{path}: the matrix has {matrix.shape[1]} columns, the FAME layout needs "
            f"{layout.n_columns}; {layout.column_role(matrix.shape[1])} and later are "
            f"missing{hint}"
        )
    subject = subject or path.stem.split("_")[0]

    def empty(reason: str) -> WindowDataset:
        log.warning("%s: %s, skipped", path, reason)
        return WindowDataset(
            X=np.empty((0, len(CHANNEL_NAMES), window), np.float32), y=np.empty(0, np.int64),
            subject=np.empty(0, str), group=np.empty(0, str), exercise=np.empty(0, str),
            channel_names=CHANNEL_NAMES, frame_rate=FRAME_RATE, step=step,
            skipped=(skipped_record(path, reason, len(matrix), whole_file=True),),
        )

    if matrix.shape[0] == 0:
        return empty("empty session: no frames")
    if not matrix[0, list(layout.emg)].any():
        return empty("empty session: first-row sEMG all zero")
    used = (*layout.signals, *layout.raters, *layout.exercise_columns)
    _check_finite(path, matrix, used, layout)
    _check_values(path, matrix, layout.raters, (0, 1, 2), "rater label", "outside 0/1/2", layout)
    _check_values(
        path, matrix, layout.exercise_columns, (0, 1), "exercise indicator", "is not 0/1", layout
    )
    X, y, exercise = window_matrix(
        matrix,
        layout,
        window=window,
        step=step,
        min_raters=min_raters,
        single_rater_value2_behaviour0=single_rater_value2_behaviour0,
    )
    if len(y) == 0:
        return empty(f"no full window: no used exercise runs {window} frames")
    n = len(y)
    return WindowDataset(
        X=X,
        y=y,
        subject=np.full(n, subject),
        group=np.full(n, group),
        exercise=exercise,
        channel_names=CHANNEL_NAMES,
        frame_rate=FRAME_RATE,
        step=step,
        skipped=tuple(skipped_record(path, r, f) for r, f in left_out(matrix, layout, window)),
    )


def read_fame_folder(root: str | os.PathLike, **kwargs: Any) -> WindowDataset:
    """Every session of a raw EmoPain tree.

    Sessions are the ``*.mat`` files under ``randomised C`` (healthy) and ``randomised P``
    (CLBP); the subject id is the file name up to the first underscore (``P07_2.mat`` -> P07).
    A subject id found under both folders is an error naming both files.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such recording folder")
    parts = []
    first_file: dict[str, dict[str, Path]] = {}
    for folder, group in GROUP_FOLDERS.items():
        for path in sorted((root / folder).glob("*.mat")):
            subject = path.stem.split("_")[0]
            first_file.setdefault(subject, {}).setdefault(group, path)
            parts.append(read_fame_session(path, group=group, **kwargs))
    check_unique_subjects({s: list(g.values()) for s, g in first_file.items()})
    if not parts:
        raise DataError(
            f"{root}: no session (*.mat) in {' or '.join(repr(f) for f in GROUP_FOLDERS)}"
        )
    return concatenate_or_explain(parts, root, "session")
