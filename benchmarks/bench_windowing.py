"""Windowing and labelling of an EmoPain-size cohort: poolwise's vectorised path against a
per-window Python loop, measured side by side on the same in-memory sessions (target: >= 20x).

    python benchmarks/bench_windowing.py [--subjects 30]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from poolwise.pain.data.fame import window_matrix
from poolwise.pain.data.layout import FameLayout
from poolwise.pain.data.synth import _movement_patterns, _subject, synth_session

WINDOW, STEP = 180, 45


def vectorised(matrix, layout, used):
    x, y, _ = window_matrix(matrix, layout, window=WINDOW, step=STEP)
    return x, y


def per_window_loop(matrix, layout, used):
    """What a straightforward implementation does: walk the frames, one window at a time."""
    windows, labels = [], []
    grid = np.zeros((len(matrix), layout.n_raters, layout.n_behaviours), dtype=np.int8)
    for r, b, col in layout.rater_cells:
        grid[:, r, b] = matrix[:, col]
    for ex, col in enumerate(layout.exercise_columns):
        if not used[ex]:
            continue
        on = matrix[:, col] != 0
        start = None
        for t in range(len(on) + 1):
            if t < len(on) and on[t] and start is None:
                start = t
            elif (t == len(on) or not on[t]) and start is not None:
                s = start
                while s + WINDOW <= t:
                    rows = grid[s : s + WINDOW]
                    protective = 0
                    for frame in rows:
                        raters = sum(1 for r in frame if (r > 0).any())
                        protective += raters >= 2 or (frame[:, 0] == 2).any()
                    signals = matrix[s : s + WINDOW, list(layout.signals)]
                    windows.append((s, signals.T.astype(np.float32)))
                    labels.append((s, int(2 * protective >= WINDOW)))
                    s += STEP
                start = None
    order = np.argsort([s for s, _ in windows], kind="stable")
    return np.stack([windows[i][1] for i in order]), np.array([labels[i][1] for i in order])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=30)
    args = parser.parse_args()
    layout = FameLayout()
    used = np.isin(np.array(layout.exercises), list(layout.used_exercises))
    patterns = _movement_patterns()
    sessions = []
    for i in range(args.subjects):
        rng = np.random.default_rng([0, i])
        group = "healthy" if i < round(0.4 * args.subjects) else "CLBP"
        sessions.append(synth_session(rng, _subject(rng, f"S{i}", group), layout, patterns))
    sessions = [m.astype(np.float64) for m in sessions]  # as the reader holds them
    results, seconds = {}, {}
    contenders = (("vectorised", vectorised, 3), ("per-window loop", per_window_loop, 1))
    for name, fn, repeats in contenders:
        times = []
        for _ in range(repeats):  # best of 3 for the fast path: it is short enough to be noisy
            start = time.perf_counter()
            results[name] = [fn(m, layout, used) for m in sessions]
            times.append(time.perf_counter() - start)
        seconds[name] = min(times)
    for (xa, ya), (xb, yb) in zip(results["vectorised"], results["per-window loop"], strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    n = sum(len(y) for _, y in results["vectorised"])
    frames = sum(len(m) for m in sessions)
    print(f"{args.subjects} sessions, {frames:,} frames, {n:,} windows (identical outputs)\n")
    print("| path | seconds | windows/s | speed-up |\n|---|---|---|---|")
    for name, s in seconds.items():
        print(f"| {name} | {s:.3f} | {n / s:,.0f} | {seconds['per-window loop'] / s:.1f}x |")


if __name__ == "__main__":
    main()
