"""GGeM's closed-form forward and backward (see :mod:`poolwise.pooling.functional` for the
formulas): the native CPU kernel, the Triton GPU kernel, or PyTorch ops in log2 space over
batch chunks, with the max-shifted recomputation of rows that overflow; and the autograd
Function that :func:`~poolwise.pooling.functional.ggem` calls."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from poolwise.kernels import ggem as native_ggem
from poolwise.kernels import ggem_triton
from poolwise.pooling._shapes import channel_view, compute_dtype, reduce_dims, to_bc

# Elements per chunk of the GGeM kernel: 1M float32 (4 MiB) keeps the per-op overhead small and
# the scratch buffer in the last-level cache (measured in benchmarks/bench_pooling.py).
_CHUNK_ELEMENTS = 1 << 20


def _chunk_rows(x: Tensor) -> int:
    per_row = max(1, x[0].numel())
    return max(1, min(x.shape[0], _CHUNK_ELEMENTS // per_row))


def _clamp_into(src: Tensor, out: Tensor, eps: float) -> Tensor:
    """out = max(src, eps), converting to out's dtype on the way."""
    if src.dtype == out.dtype:
        return torch.clamp(src, min=eps, out=out)
    return out.copy_(src).clamp_(min=eps)


def _torch_forward(x: Tensor, p_ch: Tensor, eps: float, cdim: int) -> Tensor:
    """(B, C) output of GGeM in the compute dtype from PyTorch ops; see the module docstring.

    A first pass takes the unshifted sums ``s = sum_n 2 ** (p log2 x)``, which saves the max
    pass. A sum is exact whenever it is finite and far above the subnormal range (then no term
    overflowed and the terms lost to underflow weigh nothing); the batch rows where that fails
    for any channel are recomputed with the per-channel max shift, finite for every input.
    """
    batch, channels = x.shape[0], x.shape[cdim]
    rdims = reduce_dims(x.ndim, cdim)
    n = x[0].numel() // channels
    work = compute_dtype(x)
    p = channel_view(p_ch.to(work), x.ndim, cdim)
    sums = torch.empty(batch, channels, dtype=work, device=x.device)
    rows = _chunk_rows(x)
    scratch = torch.empty((rows, *x.shape[1:]), dtype=work, device=x.device)
    for start in range(0, batch, rows):
        xb = x[start : start + rows]
        t = torch.log2(_clamp_into(xb, scratch[: xb.shape[0]], eps), out=scratch[: xb.shape[0]])
        torch.sum(t.mul_(p).exp2_(), rdims, out=sums[start : start + rows])  # sum of x ** p
    low = math.sqrt(torch.finfo(work).tiny)  # about 2**-63 in float32
    smallest, largest = torch.aminmax(sums)
    if smallest >= low and largest < math.inf:
        failed = sums.new_empty(0, dtype=torch.long)
    else:
        failed = (~((sums >= low) & (sums < math.inf)).all(dim=1)).nonzero().flatten()
    p_bc = p_ch.to(work).expand(batch, channels)
    out = sums.div_(n).log2_().div_(p_bc).exp2_()  # (mean x ** p) ** (1 / p); may hold inf
    for start in range(0, len(failed), rows):  # overflow or underflow: the max-shifted form
        index = failed[start : start + rows]
        xb = x.index_select(0, index)
        t = torch.log2(_clamp_into(xb, scratch[: len(index)], eps), out=scratch[: len(index)])
        m = t.amax(rdims, keepdim=True)
        t.sub_(m).mul_(p).exp2_()  # (x / max) ** p, in (0, 1]; the max itself gives 1
        s = t.sum(rdims, keepdim=True)  # in [1, n]: its log2 is finite
        out[index] = to_bc(torch.exp2(m + torch.log2(s / n) / p), len(index), channels)
    return out


def _torch_backward(
    grad: Tensor, x: Tensor, y: Tensor, p_ch: Tensor, eps: float, cdim: int
) -> tuple[Tensor, Tensor]:
    """Closed-form gradients for x (input dtype) and the per-channel exponents (compute dtype)
    from PyTorch ops.

    With w_n = (x_n / y) ** p = e ** z_n, z_n = p ln(x_n / y), and mean_n w_n = 1 exactly:

        dy/dp = y / p * mean_n[w_n ln(x_n / y)] = y / p**2 * mean_n[z_n e**z_n - (e**z_n - 1)]

    The added term is zero in exact arithmetic, but it makes the sum stationary in the error of
    y (a common shift of every z_n) and leaves only non-negative terms, z e**z - d with
    d = expm1(z) evaluated directly, so nearly constant channels (x = 60000 + U(0, 100): every
    z_n near 0) keep their digits in float32. The input gradient
    ``(x / y) ** (p - 1) = e**z / (x / y)`` takes e**z from its own exp: ``1 + d`` would lose
    every digit of a power below float32's epsilon.
    """
    batch, channels = x.shape[0], x.shape[cdim]
    rdims = reduce_dims(x.ndim, cdim)
    n = x[0].numel() // channels
    work = compute_dtype(x)
    p = channel_view(p_ch.to(work), x.ndim, cdim)
    grad_x = torch.empty_like(x)
    grad_p = torch.zeros(channels, dtype=work, device=x.device)
    rows = _chunk_rows(x)
    ratio = torch.empty((rows, *x.shape[1:]), dtype=work, device=x.device)
    exponent = torch.empty_like(ratio)
    power = torch.empty_like(ratio)
    view = [1] * x.ndim
    view[0], view[cdim] = -1, channels
    for start in range(0, batch, rows):
        xb = x[start : start + rows]
        b = xb.shape[0]
        yb = y[start : start + rows].reshape(view)
        gb = grad[start : start + rows].to(work).reshape(view)
        r, z, d = ratio[:b], exponent[:b], power[:b]
        _clamp_into(xb, r, eps)
        r.div_(yb)  # x / y, at most N ** (1/p)
        torch.log2(r, out=z).mul_(p * math.log(2))  # z = p ln(x / y)
        torch.special.expm1(z, out=d)  # (x / y) ** p - 1, accurate near 0
        gx = grad_x[start : start + rows]
        e = torch.exp(z, out=gx if gx.dtype == work else None)  # (x / y) ** p
        z.mul_(e).sub_(d)  # z e**z - (e**z - 1) >= 0
        weighted = z.sum(rdims, keepdim=True)
        grad_p += to_bc(gb * yb / (p * p) * weighted / n, b, channels).sum(0)
        e.div_(r).mul_(gb / n)  # (x / y) ** (p - 1) * grad / n
        if e is not gx:
            gx.copy_(e)
        gx.masked_fill_(xb <= eps, 0)  # the clamp passes no gradient below eps
    return grad_x, grad_p


def _ggem_forward_kernel(x: Tensor, p_ch: Tensor, eps: float, cdim: int) -> Tensor:
    """(B, C) output in the compute dtype: the fused Triton or native kernel where one applies
    (the native kernel's ``redo`` rows recomputed here), else :func:`_torch_forward`."""
    if ggem_triton.supports(x, eps):
        return ggem_triton.forward(x, p_ch, eps, cdim)
    if not native_ggem.supports(x, eps):
        return _torch_forward(x, p_ch, eps, cdim)
    x32 = x.to(torch.float32).contiguous()
    y, redo, count = native_ggem.forward(x32, p_ch.to(torch.float32).contiguous(), eps, cdim)
    if count:
        rows = redo.any(dim=1).nonzero().flatten()
        y[rows] = _torch_forward(x32.index_select(0, rows), p_ch, eps, cdim)
    return y


def _ggem_backward_kernel(
    grad: Tensor, x: Tensor, y: Tensor, p_ch: Tensor, eps: float, cdim: int
) -> tuple[Tensor, Tensor]:
    """Gradients for x (input dtype) and the per-channel exponents (compute dtype): the fused
    Triton or native kernel where one applies (the native kernel's ``redo`` rows recomputed
    here), else :func:`_torch_backward`."""
    n = x[0].numel() // x.shape[cdim]
    if ggem_triton.supports(x, eps):
        grad_x, weighted = ggem_triton.backward(x, y, grad, p_ch, eps, cdim)
        return grad_x, _p_gradient(grad, y, weighted, p_ch, n).to(torch.float32)
    if not native_ggem.supports(x, eps):
        return _torch_backward(grad, x, y, p_ch, eps, cdim)
    x32, p32 = x.to(torch.float32).contiguous(), p_ch.to(torch.float32).contiguous()
    g32 = grad.to(torch.float32).contiguous()
    grad_x, weighted, redo, count = native_ggem.backward(x32, y.contiguous(), g32, p32, eps, cdim)
    rows = redo.any(dim=1).nonzero().flatten() if count else None
    if rows is not None:
        weighted.index_fill_(0, rows, 0.0)
    grad_p = _p_gradient(g32, y, weighted, p_ch, n)
    if rows is not None:
        grad_x_rows, grad_p_rows = _torch_backward(
            g32.index_select(0, rows), x32.index_select(0, rows), y.index_select(0, rows),
            p_ch, eps, cdim,
        )
        grad_x[rows] = grad_x_rows
        grad_p += grad_p_rows.double()
    return grad_x.to(x.dtype), grad_p.to(torch.float32)


def _p_gradient(grad: Tensor, y: Tensor, weighted: Tensor, p_ch: Tensor, n: int) -> Tensor:
    """dL/dp per channel in float64 from a fused kernel's per-(b, c) sums:
    ``sum_b grad * y * weighted / (p**2 n)``."""
    p64 = p_ch.to(torch.float64)
    return (grad.double() * y.double() * weighted.double()).sum(0) / (p64 * p64 * n)


class GGeMFunction(torch.autograd.Function):
    """GGeM with per-channel exponents; saves only the input and the (B, C) output."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, p_ch: Tensor, eps: float, cdim: int) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = _ggem_forward_kernel(x, p_ch.detach(), eps, cdim)
        ctx.save_for_backward(x, y, p_ch)
        ctx.eps, ctx.cdim = eps, cdim
        return y.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x, y, p_ch = ctx.saved_tensors
        with torch.autocast(device_type=x.device.type, enabled=False):
            grad_x, grad_p = _ggem_backward_kernel(grad, x, y, p_ch, ctx.eps, ctx.cdim)
        return (
            grad_x if ctx.needs_input_grad[0] else None,
            grad_p.to(p_ch.dtype) if ctx.needs_input_grad[1] else None,
            None,
            None,
        )
