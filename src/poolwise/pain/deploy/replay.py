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

from poolwise.pain.data.files import load_mat_matrix
from poolwise.pain.data.layout import FameLayout


def _number(text: str) -> float:
    text = text.strip()
    return float("nan") if text == "" or text.lower() in ("nan", "na", "null") else float(text)


def _cell(row: list[str], col: int, header: list[str], name: str, row_number: int) -> float:
    try:
        return _number(row[col])
    except ValueError:
        raise ValueError(f"{name}: row {row_number}, column {header[col]!r}: {row[col]!r} is "
                         "not a number (empty cells and 'nan' mark missing values)") from None


def iter_csv_frames(
    stream: TextIO, channel_names: Sequence[str], *, chunk: int = 45, name: str = "input"
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yields ``(frames (k, channels), timestamps (k,) or None)`` every ``chunk`` rows.

    Raises:
        ValueError: naming the input, row and column, for a missing channel column or a cell
            that is not a number.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of rows, got {chunk}")
    rows = _rows(stream, name)
    try:
        header = [h.strip() for h in next(rows)[1]]
    except StopIteration:
        raise ValueError(f"{name}: empty, expected a header row") from None
    if not all(h.isprintable() for h in header):
        raise ValueError(f"{name}: row 1 is not CSV text (it holds control characters); "
                         "expected a header of channel names, then one frame per row")
    absent = [c for c in channel_names if c not in header]
    if absent:
        raise ValueError(f"{name}: no column for channel(s) {', '.join(absent[:6])}"
                         + (" ..." if len(absent) > 6 else "") + f"; header: {header[:8]}")
    repeated = sorted({h for h in header if h and header.count(h) > 1})
    if repeated:
        raise ValueError(f"{name}: the header names column(s) {', '.join(repeated)} twice")
    columns = [header.index(c) for c in channel_names]
    time_col = header.index("time") if "time" in header else None
    frames: list[list[float]] = []
    times: list[float] = []
    last: tuple[int, float] | None = None  # (row, time) of the previous row with a time
    for row_number, row in rows:
        if not row:
            continue
        if len(row) != len(header):
            raise ValueError(f"{name}: row {row_number} has {len(row)} cells, the header "
                             f"{len(header)}")
        frames.append([_cell(row, c, header, name, row_number) for c in columns])
        if time_col is not None:
            t = _cell(row, time_col, header, name, row_number)
            if last is not None and not t > last[1]:
                raise ValueError(f"{name}: row {row_number} has time {t:g}, not after row "
                                 f"{last[0]}'s {last[1]:g}; the time column must increase "
                                 "(sort the rows, or drop the column to use the frame rate)")
            last = (row_number, t)
            times.append(t)
        if len(frames) == chunk:
            yield np.asarray(frames, np.float32), np.asarray(times) if times else None
            frames, times = [], []
    if frames:
        yield np.asarray(frames, np.float32), np.asarray(times) if times else None


def _rows(stream: TextIO, name: str) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells), with unreadable bytes reported as a ValueError naming the row."""
    reader = csv.reader(stream)
    row_number = 0
    while True:
        row_number += 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as error:
            raise ValueError(f"{name}: row {row_number} is not CSV text ({error}); expected a "
                             "header of channel names, then one frame per row") from None
        yield row_number, row


def read_fame_frames(path: str | Path, layout: FameLayout | None = None) -> np.ndarray:
    """The 30 model columns of a raw FAME session ``(frames, 30)`` in CHANNEL_NAMES order
    (60 Hz)."""
    layout = layout or FameLayout()
    matrix = load_mat_matrix(path, min_columns=max(layout.signals) + 1)
    return matrix[:, list(layout.signals)].astype(np.float32)

