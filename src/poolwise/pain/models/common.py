"""Input checks shared by every pain model: numpy3D-style batches (B, channels, time)."""

from __future__ import annotations

from torch import Tensor


def check_batch(x: Tensor, n_channels: int, min_window: int = 1) -> None:
    """Raises ValueError naming the shape at fault."""
    if x.ndim != 3:
        raise ValueError(f"expected a batch (B, channels, time), got shape {tuple(x.shape)}")
    if x.shape[1] != n_channels:
        raise ValueError(
            f"expected {n_channels} signal channels at dim 1, got {x.shape[1]} "
            f"(input shape {tuple(x.shape)})"
        )
    if x.shape[2] < min_window:
        raise ValueError(
            f"a window of {x.shape[2]} frames is too short: this model needs at least {min_window}"
        )
