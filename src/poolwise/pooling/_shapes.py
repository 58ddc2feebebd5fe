"""Shape and dtype helpers shared by the pooling operators: which dims a pool reduces, a
per-channel vector viewed against the input, the (B, C) result, the dtype of the arithmetic."""

from __future__ import annotations

import torch
from torch import Tensor


def reduce_dims(ndim: int, cdim: int) -> tuple[int, ...]:
    return tuple(d for d in range(1, ndim) if d != cdim)


def to_bc(t: Tensor, batch: int, channels: int) -> Tensor:
    """(B, 1.., C, 1..) keepdim reduction -> (B, C)."""
    return t.reshape(batch, channels)


def channel_view(v: Tensor, ndim: int, cdim: int) -> Tensor:
    shape = [1] * ndim
    shape[cdim] = v.numel()
    return v.reshape(shape)


def compute_dtype(x: Tensor) -> torch.dtype:
    """float32 for half/bfloat16/float32 input, float64 for float64 (gradcheck)."""
    return torch.promote_types(x.dtype, torch.float32)
