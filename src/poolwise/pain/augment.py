"""Normalisation and the paper's augmentations, on numpy3D-style windows (n, channels, time).

The paper augments with Gaussian jitter (std 0.05, 0.10, 0.15) and with zeroed row x column
blocks (5, 10, 15 %), which turns about 4,000 windows into 28,000: each window plus six
augmented copies. poolwise applies them to the (already normalised) training windows only,
either online (every time a window is drawn it becomes one of the seven variants, uniformly) or
as the fixed seven-fold expansion (:func:`expand`, the reference protocol).

A zeroed block covers the given fraction of the window's cells: ceil(sqrt(f) T) consecutive
frames x ceil(sqrt(f) C) consecutive signal columns at a uniform random position (the paper
gives only the percentages; this reading is our assumption, documented in docs/pain.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

JITTER_STDS = (0.05, 0.10, 0.15)
BLOCK_FRACTIONS = (0.05, 0.10, 0.15)


def fit_zscore(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over windows and time; a constant channel gets std 1."""
    if X.ndim != 3:
        raise ValueError(f"expected windows (n, channels, time), got shape {X.shape}")
    mean = X.mean(axis=(0, 2), dtype=np.float64)
    std = X.std(axis=(0, 2), dtype=np.float64)
    std[std < 1e-8] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def apply_zscore(X: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((X - mean[None, :, None]) / std[None, :, None]).astype(np.float32)


def _block_sides(fraction: float, channels: int, time: int) -> tuple[int, int]:
    side = math.sqrt(fraction)
    return math.ceil(side * channels), math.ceil(side * time)


def augment_batch(
    x: Tensor,
    variant: Tensor,
    generator: torch.Generator,
    jitter_stds: Sequence[float] = JITTER_STDS,
    block_fractions: Sequence[float] = BLOCK_FRACTIONS,
) -> Tensor:
    """Applies variant ``v`` to each window of ``x`` (B, C, T), out of place.

    ``v = 0`` keeps the window, ``1..len(jitter_stds)`` add Gaussian noise of that std, the
    next ``len(block_fractions)`` zero a block of that fraction of the cells.
    """
    b, c, t = x.shape
    n_jitter = len(jitter_stds)
    stds = torch.tensor([0.0, *jitter_stds, *[0.0] * len(block_fractions)], dtype=x.dtype)
    sigma = stds[variant]
    out = x + sigma[:, None, None] * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    block = variant > n_jitter
    if block.any():
        sides = torch.tensor(
            [(0, 0)] * (1 + n_jitter) + [_block_sides(f, c, t) for f in block_fractions]
        )
        rows, frames = sides[variant, 0], sides[variant, 1]
        c0 = (torch.rand(b, generator=generator) * (c - rows + 1)).long()
        t0 = (torch.rand(b, generator=generator) * (t - frames + 1)).long()
        ch, fr = torch.arange(c), torch.arange(t)
        in_rows = (ch[None] >= c0[:, None]) & (ch[None] < (c0 + rows)[:, None])
        in_frames = (fr[None] >= t0[:, None]) & (fr[None] < (t0 + frames)[:, None])
        out = out.masked_fill(in_rows[:, :, None] & in_frames[:, None, :], 0.0)
    return out


def n_variants(
    jitter_stds: Sequence[float] = JITTER_STDS, block_fractions: Sequence[float] = BLOCK_FRACTIONS
) -> int:
    return 1 + len(jitter_stds) + len(block_fractions)


def expand(X: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed seven-fold expansion: every window, then each augmented copy.

    Returns the expanded windows and, for each, the index of its source window.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    parts = [
        augment_batch(x, torch.full((len(x),), v), generator) for v in range(n_variants())
    ]
    source = np.tile(np.arange(len(X)), n_variants())
    return torch.cat(parts).numpy(), source
