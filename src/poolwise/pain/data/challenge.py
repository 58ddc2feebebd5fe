"""Challenge-style EmoPain files (one per subject: 30 signal columns and a label column, as
``.mat`` or CSV) into windows."""

from __future__ import annotations

import csv
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
from poolwise.pain.data.layout import CHANNEL_NAMES
from poolwise.pain.data.windows import (
    cut_windows,
    window_labels,
    window_starts,
)


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
        skipped = (skipped_record(path, reason, len(matrix), whole_file=True),)
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
    check_unique_subjects(owners)
    return concatenate_or_explain([read_challenge_file(f, **kwargs) for f in files], root,
                                   "file")
