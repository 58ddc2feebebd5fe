"""What every EmoPain reader shares: :class:`DataError` (bad input, naming the file and the
column), matrices read from ``.mat`` files, the checks of window arguments and subject ids, and
the record of what a reader leaves out by design."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from poolwise.pain.data.dataset import WindowDataset

log = logging.getLogger("poolwise.pain.data")


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


def check_window_args(window: int, step: int) -> None:
    """Raises DataError unless window and step are positive whole numbers of frames."""
    for name, value in (("window", window), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise DataError(f"{name} must be a positive number of frames, got {value!r}")


def skipped_record(path: Path, reason: str, frames: int, whole_file: bool = False) -> dict:
    return {"file": str(path), "reason": reason, "frames": int(frames), "whole_file": whole_file}


def concatenate_or_explain(parts: list[WindowDataset], root: Path, what: str) -> WindowDataset:
    dataset = WindowDataset.concatenate(parts)
    if len(dataset) == 0:
        reasons = "; ".join(f"{Path(e['file']).name}: {e['reason']}"
                            for e in dataset.skipped[:5])
        raise DataError(f"{root}: no windows in any {what} ({reasons or 'no sessions'}); "
                        "check --window against the recordings' lengths")
    return dataset


def check_unique_subjects(owners: dict[str, list[Path]]) -> None:
    """Raises DataError naming both files when one subject id belongs to two groups/files."""
    for subject, files in sorted(owners.items()):
        if len(files) > 1:
            raise DataError(f"subject {subject} appears in {files[0]} and in {files[1]}; one "
                            "subject must have one group and one id: rename one of them")
