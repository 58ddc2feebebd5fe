"""Synthetic windows of any channel count and any number of classes, for trying the sensor side
on data that is not EmoPain's (an IMU, an EMG array, a K-level task) without a download.

Generative model, per subject s and class k: every window is a sum of sinusoids, one per
channel, whose frequency (1-4 cycles per window) and phase are drawn per channel; class k adds
``separation`` times a class pattern (a sinusoid of its own frequency and a level shift) to the
channels ``k mod C, (k + 1) mod C``; each subject scales every channel by a gain (lognormal, sd
0.3), adds an offset (sd 0.5) and white noise (sd 1). Subjects carry groups ``"A"`` / ``"B"``
alternately. The task is learnable, but not across subjects for free: subject gains and offsets
move the classes' levels.
"""

from __future__ import annotations

import numpy as np

from poolwise.pain.data.dataset import WindowDataset


def synthetic_windows(
    *,
    n_subjects: int = 8,
    n_classes: int = 3,
    n_channels: int = 6,
    window: int = 64,
    per_class: int = 8,
    separation: float = 1.5,
    frame_rate: float = 50.0,
    seed: int = 0,
) -> WindowDataset:
    """``n_subjects x n_classes x per_class`` windows ``(n, n_channels, window)``, float32,
    classes ``"class 0" .. "class K-1"``, channels ``"ch0" ..``, hop = window."""
    if n_subjects < 1 or n_classes < 2 or n_channels < 1 or window < 2 or per_class < 1:
        raise ValueError("need n_subjects >= 1, n_classes >= 2, n_channels >= 1, window >= 2 "
                         f"and per_class >= 1; got {n_subjects}, {n_classes}, {n_channels}, "
                         f"{window}, {per_class}")
    rng = np.random.default_rng(seed)
    t = np.arange(window) / window
    base_freq = rng.uniform(1, 4, n_channels)
    base_phase = rng.uniform(0, 2 * np.pi, n_channels)
    base = np.sin(2 * np.pi * base_freq[:, None] * t + base_phase[:, None])  # (C, T)
    pattern = np.zeros((n_classes, n_channels, window))
    for k in range(n_classes):
        wave = np.sin(2 * np.pi * (k + 1) * t) + 0.5
        for c in {k % n_channels, (k + 1) % n_channels}:
            pattern[k, c] = wave
    X, y, subject, group = [], [], [], []
    for s in range(n_subjects):
        gain = np.exp(rng.normal(0, 0.3, n_channels))[:, None]
        offset = rng.normal(0, 0.5, n_channels)[:, None]
        for k in range(n_classes):
            clean = base + separation * pattern[k]
            noise = rng.normal(0, 1, (per_class, n_channels, window))
            X.append(gain * clean + offset + noise)
            y += [k] * per_class
            subject += [f"S{s + 1:02d}"] * per_class
            group += ["AB"[s % 2]] * per_class
    n = len(y)
    return WindowDataset(
        X=np.concatenate(X).astype(np.float32),
        y=np.array(y),
        subject=np.array(subject),
        group=np.array(group),
        exercise=np.array(["none"] * n),
        channel_names=tuple(f"ch{c}" for c in range(n_channels)),
        frame_rate=frame_rate,
        step=window,
        class_names=tuple(f"class {k}" for k in range(n_classes)),
    )
