"""Readers for EmoPain recordings: raw per-session FAME .mat files and challenge-style files.

Both give a :class:`~poolwise.pain.data.dataset.WindowDataset`. Bad input raises
:class:`DataError` naming the file and the column. Nothing is silently repaired or dropped:
what is left out by design (an empty session, i.e. first-row sEMG all zero as in the EmoPain
release; a session or exercise segment shorter than a window; frames of excluded exercises) is
recorded per file and reason in ``WindowDataset.skipped``, and whole skipped files are also
logged as warnings.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from poolwise.pain.constants import FRAME_RATE, STEP, WINDOW
from poolwise.pain.data.dataset import WindowDataset
from poolwise.pain.data.layout import CHANNEL_NAMES, FameLayout
from poolwise.pain.data.windows import (
    cut_windows,
    exercise_segments,
    fuse_raters,
    window_labels,
    window_starts,
)

log = logging.getLogger("poolwise.pain.data")

GROUP_FOLDERS = {"randomised C": "healthy", "randomised P": "CLBP"}


class DataError(ValueError):
    """Input data that cannot be used as it is; the message names the file and column."""


def load_mat_matrix(path: str | os.PathLike, min_columns: int = 1) -> np.ndarray:
    """The one numeric 2-D matrix of a .mat file (MATLAB v5 via scipy, v7.3 via h5py).

    The variable's name varies between EmoPain files, so it is found, not assumed: the file must
    hold exactly one numeric 2-D array with at least ``min_columns`` columns.
    """
    import h5py
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if h5py.is_hdf5(path):
        try:
            with h5py.File(path, "r") as f:
                # MATLAB stores column-major, so h5py sees the transpose
                candidates = {
                    name: np.asarray(obj).T
                    for name, obj in f.items()
                    if isinstance(obj, h5py.Dataset) and obj.ndim == 2
                    and obj.dtype.kind in "fiub"
                }
        except (OSError, RuntimeError, KeyError, ValueError) as err:
            raise DataError(f"{path}: unreadable MATLAB v7.3 (HDF5) file ({err}); it may be "
                            "truncated: copy it again") from None
    else:
        try:
            content = scipy.io.loadmat(path)
        except Exception as err:  # scipy raises several types for non-.mat bytes
            raise DataError(f"{path}: not a readable MATLAB .mat file ({err})") from err
        candidates = {
            name: value
            for name, value in content.items()
            if not name.startswith("__")
            and isinstance(value, np.ndarray)
            and value.ndim == 2
            and value.dtype.kind in "fiub"
        }
    wide = {n: v for n, v in candidates.items() if v.shape[1] >= min_columns}
    if len(wide) != 1:
        shapes = {n: v.shape for n, v in candidates.items()}
        raise DataError(
            f"{path}: expected one numeric matrix with at least {min_columns} columns, "
            f"found {shapes or 'none'}"
        )
    return np.asarray(next(iter(wide.values())), dtype=np.float64)


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


def check_window_args(window: int, step: int) -> None:
    """Raises DataError unless window and step are positive whole numbers of frames."""
    for name, value in (("window", window), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise DataError(f"{name} must be a positive number of frames, got {value!r}")


def _skip(path: Path, reason: str, frames: int, whole_file: bool = False) -> dict:
    return {"file": str(path), "reason": reason, "frames": int(frames), "whole_file": whole_file}


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
            skipped=(_skip(path, reason, len(matrix), whole_file=True),),
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
        skipped=tuple(_skip(path, r, f) for r, f in left_out(matrix, layout, window)),
    )


def _concatenate_or_explain(parts: list[WindowDataset], root: Path, what: str) -> WindowDataset:
    dataset = WindowDataset.concatenate(parts)
    if len(dataset) == 0:
        reasons = "; ".join(f"{Path(e['file']).name}: {e['reason']}"
                            for e in dataset.skipped[:5])
        raise DataError(f"{root}: no windows in any {what} ({reasons or 'no sessions'}); "
                        "check --window against the recordings' lengths")
    return dataset


def _check_unique_subjects(owners: dict[str, list[Path]]) -> None:
    """Raises DataError naming both files when one subject id belongs to two groups/files."""
    for subject, files in sorted(owners.items()):
        if len(files) > 1:
            raise DataError(f"subject {subject} appears in {files[0]} and in {files[1]}; one "
                            "subject must have one group and one id: rename one of them")


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
    _check_unique_subjects({s: list(g.values()) for s, g in first_file.items()})
    if not parts:
        raise DataError(
            f"{root}: no session (*.mat) in {' or '.join(repr(f) for f in GROUP_FOLDERS)}"
        )
    return _concatenate_or_explain(parts, root, "session")


def read_challenge_file(
    path: str | os.PathLike,
    *,
    subject: str | None = None,
    group: str = "unknown",
    window: int = WINDOW,
    step: int = STEP,
) -> WindowDataset:
    """One challenge-style subject file (EmoPain 2020 / AffectMove 2021).

    Frames x 31 columns: the 30 signals of :data:`CHANNEL_NAMES` then a protective label (0/1),
    as .csv (an optional header row) or .mat. The whole recording is one segment.
    """
    check_window_args(window, step)
    path = Path(path)
    n_cols = len(CHANNEL_NAMES) + 1
    if path.suffix.lower() == ".csv":
        matrix = _read_numeric_csv(path, n_cols)
    elif path.suffix.lower() == ".mat":
        matrix = load_mat_matrix(path)
    else:
        raise DataError(f"{path}: expected a .csv or .mat challenge file")
    if matrix.shape[1] != n_cols:
        hint = (" (the matrix looks transposed: frames must be rows)"
                if matrix.shape[0] == n_cols else "")
        raise DataError(
            f"{path}: expected {n_cols} columns (30 signals + label), got {matrix.shape[1]}{hint}"
        )
    bad = ~np.isfinite(matrix)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        name = CHANNEL_NAMES[col] if col < len(CHANNEL_NAMES) else "label"
        raise DataError(f"{path}: NaN/Inf in column {col} ({name}) at frame {row}")
    labels = matrix[:, -1]
    if not np.isin(labels, (0, 1)).all():
        row = int(np.argmax(~np.isin(labels, (0, 1))))
        raise DataError(
            f"{path}: label {labels[row]:g} outside 0/1 in column {n_cols - 1} "
            f"(label) at frame {row}"
        )
    starts, _ = window_starts(np.array([[0, len(matrix), 0]]), window, step)
    signals = matrix[:, :-1].astype(np.float32)
    n = len(starts)
    skipped = ()
    if n == 0:
        reason = f"recording shorter than a window: {len(matrix)} frames < {window}"
        log.warning("%s: %s, skipped", path, reason)
        skipped = (_skip(path, reason, len(matrix), whole_file=True),)
    return WindowDataset(
        X=np.ascontiguousarray(cut_windows(signals, starts, window)),
        y=window_labels(labels.astype(bool), starts, window),
        subject=np.full(n, subject or path.stem),
        group=np.full(n, group),
        exercise=np.full(n, "unknown"),
        channel_names=CHANNEL_NAMES,
        frame_rate=FRAME_RATE,
        step=step,
        skipped=skipped,
    )


def _read_numeric_csv(path: Path, n_cols: int) -> np.ndarray:
    """A numeric CSV with an optional header row: a header is a first row with a cell that is
    not a number, so a data row is never taken for one."""
    try:
        with open(path, newline="") as f:
            first = next(csv.reader(f), [])
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not a text CSV file ({err})") from None
    has_header = any(not _is_number(cell) for cell in first)
    if has_header and len(first) != n_cols:
        raise DataError(f"{path}: the header has {len(first)} columns, expected {n_cols} "
                        "(30 signals + label)")
    try:
        return np.loadtxt(path, delimiter=",", skiprows=int(has_header), ndmin=2)
    except ValueError as err:
        raise DataError(f"{path}: not a numeric CSV ({err})") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_challenge_folder(root: str | os.PathLike, **kwargs: Any) -> WindowDataset:
    """Every challenge-style file (``*.csv``, ``*.mat``) of a folder, one subject per file
    (the subject id is the file name without its suffix).

    Raises:
        DataError: naming both files when two files have the same subject id, or when no file
            gives a window.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder of challenge files")
    files = sorted([*root.glob("*.csv"), *root.glob("*.mat")])
    if not files:
        raise DataError(f"{root}: no .csv or .mat challenge files")
    owners: dict[str, list[Path]] = {}
    for f in files:
        owners.setdefault(f.stem, []).append(f)
    _check_unique_subjects(owners)
    return _concatenate_or_explain([read_challenge_file(f, **kwargs) for f in files], root,
                                   "file")


def load_dataset(path: str | os.PathLike, *, cache: bool = True,
                 **kwargs: Any) -> WindowDataset:
    """A cached ``.npz`` dataset, or a raw FAME tree.

    A tree read with default options is cached as ``poolwise_windows.npz`` inside it (when
    ``cache`` and the folder is writable); reader options (window, step, layout, ...) bypass
    the cache so a stale file is never returned for other settings.
    """
    path = Path(path)
    if path.is_file():
        return WindowDataset.load(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such dataset file or recording folder")
    cache = cache and not kwargs
    cached = path / "poolwise_windows.npz"
    if cache and cached.is_file():
        return WindowDataset.load(cached)
    dataset = read_fame_folder(path, **kwargs)
    if cache and os.access(path, os.W_OK):
        dataset.save(cached)
    return dataset
