"""Frame labels, exercise segments and windows: pure, vectorised numpy functions.

Conventions (EmoPain, DESIGN.md): a frame is protective when at least ``min_raters`` of the
raters marked any behaviour on it (the authors' code also counts a single rater's value 2 on
behaviour 0); windows of ``window`` frames move by ``step`` inside one exercise segment, only
full windows are kept; a window is protective when at least half of its frames are.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def fuse_raters(
    ratings: np.ndarray, *, min_raters: int = 2, single_rater_value2_behaviour0: bool = True
) -> np.ndarray:
    """Frame labels from rater marks.

    Args:
        ratings: (frames, raters, behaviours) integers in {0, 1, 2}.
        min_raters: A frame is protective when at least this many raters marked any behaviour.
        single_rater_value2_behaviour0: Also count one rater's value 2 on behaviour 0, as the
            authors' code does.

    Returns:
        (frames,) bool.
    """
    marked = (ratings > 0).any(axis=2).sum(axis=1) >= min_raters
    if single_rater_value2_behaviour0:
        marked |= (ratings[:, :, 0] == 2).any(axis=1)
    return marked


def exercise_segments(indicators: np.ndarray) -> np.ndarray:
    """Runs of consecutive frames where an indicator is on.

    Args:
        indicators: (frames, n_exercises), nonzero while the exercise runs.

    Returns:
        (n_segments, 3) int array of (start, stop, exercise index), stop exclusive, sorted by
        start.
    """
    on = np.asarray(indicators) != 0
    padded = np.zeros((on.shape[0] + 2, on.shape[1]), dtype=np.int8)
    padded[1:-1] = on
    edges = np.diff(padded, axis=0)  # +1 at a start, -1 one past the end
    start_frame, start_ex = np.nonzero(edges == 1)
    stop_frame, stop_ex = np.nonzero(edges == -1)
    starts = np.stack([start_frame, start_ex], 1)[np.lexsort((start_frame, start_ex))]
    stops = np.stack([stop_frame, stop_ex], 1)[np.lexsort((stop_frame, stop_ex))]
    segments = np.column_stack([starts[:, 0], stops[:, 0], starts[:, 1]])
    return segments[np.argsort(segments[:, 0], kind="stable")]


def window_starts(segments: np.ndarray, window: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Start frames of every full window inside each segment.

    Returns:
        (starts, segment index of each start).
    """
    lengths = segments[:, 1] - segments[:, 0]
    counts = np.where(lengths >= window, (lengths - window) // step + 1, 0)
    seg_index = np.repeat(np.arange(len(segments)), counts)
    first = np.cumsum(counts) - counts  # position of each segment's first window
    offsets = (np.arange(counts.sum()) - first[seg_index]) * step
    return segments[seg_index, 0] + offsets, seg_index


def cut_windows(signals: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    """(frames, channels) -> (n, channels, window) windows at ``starts`` (numpy3D)."""
    if len(starts) == 0:
        return np.empty((0, signals.shape[1], window), dtype=signals.dtype)
    return sliding_window_view(signals, window, axis=0)[starts]


def window_labels(frame_labels: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    """1 where at least half of the window's frames are protective, else 0."""
    counts = np.concatenate([[0], np.cumsum(frame_labels, dtype=np.int64)])
    protective = counts[starts + window] - counts[starts]
    return (2 * protective >= window).astype(np.int64)
