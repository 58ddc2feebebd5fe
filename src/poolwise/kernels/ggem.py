"""The fused GGeM ops of ``csrc/ggem.cpp``: one pass over x forward, one backward.

Both take x as a contiguous float32 CPU tensor with channels at ``cdim`` and per-channel
exponents (C,). They return, beside their results, ``redo`` (B, C) uint8: 1 where the kernel
left a value to the caller (inputs with inf or NaN, sums of powers outside the range where the
unshifted sum is exact, ratios x / y below float32's normal range), and how many of those there
are; the caller recomputes those batch rows with the max-shifted PyTorch formulation
(:mod:`poolwise.pooling.functional`).

:func:`forward` and :func:`backward` are the eager calls (what ``ggem`` runs, a few
microseconds around the kernel). ``poolwise::ggem_forward`` and ``poolwise::ggem_backward`` are
the torch custom ops, with fake implementations, for graphs that hold them: one op for every
device, served by this kernel on CPU and by the Triton kernel of
:mod:`poolwise.kernels.ggem_triton` on CUDA (which leaves nothing to redo: its ``redo`` is all
zeros).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from poolwise import kernels
from poolwise.kernels import ggem_triton
from poolwise.kernels.build import library

__all__ = ["backward", "forward", "ggem_backward", "ggem_forward", "supports", "view_sizes"]

_FLOAT32_TINY = torch.finfo(torch.float32).tiny


def supports(x: Tensor, eps: float) -> bool:
    """Whether the native kernel handles this input: CPU, float32/float16/bfloat16 (converted
    to float32), ``eps`` a normal float32, and the library built and switched on."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float16, torch.bfloat16)
        and _FLOAT32_TINY <= eps < math.inf
        and kernels.available()
    )


def view_sizes(shape: torch.Size | tuple[int, ...], cdim: int) -> tuple[int, int, int, int]:
    """(batch, outer, channels, inner): the dims before and after the channel dim, flattened."""
    return shape[0], math.prod(shape[1:cdim]), shape[cdim], math.prod(shape[cdim + 1 :])


def forward(x: Tensor, p: Tensor, eps: float, cdim: int) -> tuple[Tensor, Tensor, int]:
    """(y (B, C) float32, redo (B, C) uint8, redo count) for contiguous float32 x and p (C,)."""
    batch, outer, channels, inner = view_sizes(x.shape, cdim)
    y = x.new_empty(batch, channels)
    redo = torch.empty(batch, channels, dtype=torch.uint8)
    count = library().pw_ggem_forward(
        x.data_ptr(), p.data_ptr(), eps, y.data_ptr(), redo.data_ptr(),
        batch, outer, channels, inner, torch.get_num_threads(),
    )
    return y, redo, count


def backward(
    x: Tensor, y: Tensor, grad: Tensor, p: Tensor, eps: float, cdim: int
) -> tuple[Tensor, Tensor, Tensor, int]:
    """(grad_x like x, weighted (B, C) float64, redo (B, C) uint8, redo count).

    ``weighted[b, c] = sum_n [z e**z - (e**z - 1)]`` with ``z = p ln(x / y)``, from which
    ``dL/dp = sum_b grad * y * weighted / (p**2 n)``.
    """
    batch, outer, channels, inner = view_sizes(x.shape, cdim)
    grad_x = torch.empty_like(x)
    weighted = torch.empty(batch, channels, dtype=torch.float64)
    redo = torch.empty(batch, channels, dtype=torch.uint8)
    count = library().pw_ggem_backward(
        x.data_ptr(), y.data_ptr(), grad.data_ptr(), p.data_ptr(), eps, grad_x.data_ptr(),
        weighted.data_ptr(), redo.data_ptr(), batch, outer, channels, inner,
        torch.get_num_threads(),
    )
    return grad_x, weighted, redo, count


def _require_native(x: Tensor, eps: float) -> None:
    if not supports(x, eps) or x.dtype != torch.float32 or not x.is_contiguous():
        raise ValueError(
            f"poolwise::ggem ops take a contiguous float32 CPU tensor with the native library "
            f"built, or a CUDA tensor with Triton; got {x.dtype} on {x.device} "
            f"(contiguous: {x.is_contiguous()}, eps={eps}): call poolwise.pooling.ggem, which "
            "converts and falls back"
        )


@torch.library.custom_op("poolwise::ggem_forward", mutates_args=())
def ggem_forward(x: Tensor, p: Tensor, eps: float, cdim: int) -> tuple[Tensor, Tensor]:
    """:func:`forward` as a custom op: (y, redo); the Triton forward on CUDA."""
    if ggem_triton.supports(x, eps):
        y = ggem_triton.forward(x, p, eps, cdim)
        return y, torch.zeros(y.shape, dtype=torch.uint8, device=y.device)
    _require_native(x, eps)
    y, redo, _ = forward(x, p, eps, cdim)
    return y, redo


@ggem_forward.register_fake
def _(x, p, eps, cdim):
    batch, channels = x.shape[0], x.shape[cdim]
    return x.new_empty(batch, channels), x.new_empty(batch, channels, dtype=torch.uint8)


@torch.library.custom_op("poolwise::ggem_backward", mutates_args=())
def ggem_backward(
    x: Tensor, y: Tensor, grad: Tensor, p: Tensor, eps: float, cdim: int
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`backward` as a custom op: (grad_x, weighted, redo); the Triton backward on CUDA
    (its float32 ``weighted`` returned as float64, like this kernel's)."""
    if ggem_triton.supports(x, eps):
        grad_x, weighted = ggem_triton.backward(x, y, grad, p, eps, cdim)
        redo = torch.zeros(weighted.shape, dtype=torch.uint8, device=x.device)
        return grad_x, weighted.double(), redo
    _require_native(x, eps)
    grad_x, weighted, redo, _ = backward(x, y, grad, p, eps, cdim)
    return grad_x, weighted, redo


@ggem_backward.register_fake
def _(x, y, grad, p, eps, cdim):
    batch, channels = x.shape[0], x.shape[cdim]
    return (
        x.new_empty(x.shape),  # contiguous, as both kernels return it
        x.new_empty(batch, channels, dtype=torch.float64),
        x.new_empty(batch, channels, dtype=torch.uint8),
    )
