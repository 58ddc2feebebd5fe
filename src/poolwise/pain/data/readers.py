"""Readers for EmoPain recordings: raw per-session FAME .mat files (:mod:`.fame`) and
challenge-style files (:mod:`.challenge`), and :func:`load_dataset` for a window file or a FAME
tree. Both give a :class:`~poolwise.pain.data.dataset.WindowDataset`. Bad input raises
:class:`DataError` naming the file and the column. Nothing is silently repaired or dropped:
what is left out by design (an empty session, i.e. first-row sEMG all zero as in the EmoPain
release; a session or exercise segment shorter than a window; frames of excluded exercises) is
recorded per file and reason in ``WindowDataset.skipped``, and whole skipped files are also
logged as warnings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from poolwise.pain.data.challenge import read_challenge_file, read_challenge_folder
from poolwise.pain.data.dataset import WindowDataset
from poolwise.pain.data.fame import read_fame_folder, read_fame_session
from poolwise.pain.data.files import DataError

__all__ = ["DataError", "load_dataset", "read_challenge_file", "read_challenge_folder",
           "read_fame_folder", "read_fame_session"]


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
