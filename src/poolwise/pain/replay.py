"""Recordings replayed as streams: CSV (a file or stdin, read incrementally) or a FAME .mat.

CSV: a header row, then one frame per row. The header holds the detector's channel names (any
order; extra columns are ignored) and optionally a ``time`` column in seconds. Empty cells and
``nan`` are missing values (see the streaming policy).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from poolwise.pain.data.layout import FameLayout
from poolwise.pain.data.readers import load_mat_matrix

FAME_FRAME_RATE = 60.0


def _number(text: str) -> float:
    text = text.strip()
    return float("nan") if text == "" or text.lower() in ("nan", "na", "null") else float(text)


def iter_csv_frames(
    stream: TextIO, channel_names: Sequence[str], *, chunk: int = 45, name: str = "input"
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yields ``(frames (k, channels), timestamps (k,) or None)`` every ``chunk`` rows.

    Raises:
        ValueError: naming the input, row and column, for a missing channel column or a cell
            that is not a number.
    """
    reader = csv.reader(stream)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ValueError(f"{name}: empty, expected a header row") from None
    absent = [c for c in channel_names if c not in header]
    if absent:
        raise ValueError(f"{name}: no column for channel(s) {', '.join(absent[:6])}"
                         + (" ..." if len(absent) > 6 else "") + f"; header: {header[:8]}")
    columns = [header.index(c) for c in channel_names]
    time_col = header.index("time") if "time" in header else None
    frames: list[list[float]] = []
    times: list[float] = []
    for row_number, row in enumerate(reader, start=2):
        if not row:
            continue
        try:
            frames.append([_number(row[c]) for c in columns])
            if time_col is not None:
                times.append(_number(row[time_col]))
        except IndexError:
            raise ValueError(f"{name}: row {row_number} has {len(row)} cells, the header "
                             f"{len(header)}") from None
        except ValueError as error:
            raise ValueError(f"{name}: row {row_number}: {error}") from None
        if len(frames) == chunk:
            yield np.asarray(frames, np.float32), np.asarray(times) if times else None
            frames, times = [], []
    if frames:
        yield np.asarray(frames, np.float32), np.asarray(times) if times else None


def read_fame_frames(path: str | Path, layout: FameLayout | None = None) -> np.ndarray:
    """The 30 model columns of a raw FAME session ``(frames, 30)`` in CHANNEL_NAMES order
    (60 Hz)."""
    layout = layout or FameLayout()
    matrix = load_mat_matrix(path, min_columns=max(layout.signals) + 1)
    return matrix[:, list(layout.signals)].astype(np.float32)

