"""Pure pooling operators: (B, ..., C, ...) -> (B, C).

Every operator takes an input with a batch dim 0 and a channel dim ``channel_dim``; all other
dims (tokens, spatial positions, time) are reduced. ViT tokens are ``(B, N, C)`` with
``channel_dim=-1``; CNN maps ``(B, C, H, W)`` and sensor windows ``(B, C, T)`` use
``channel_dim=1``.

GGeM (Ko et al., "Group Generalized Mean Pooling for Vision Transformer", arXiv 2212.04114)
splits the C channels into G groups with one exponent each::

    y[b, c] = ( mean_n  max(x[b, n, c], eps) ** p[g(c)] ) ** (1 / p[g(c)])

G = 1 is GeM (Radenovic et al.), G = C is channel-wise GeM. Its backward is closed-form and
needs only the input and the (B, C) output:

    dy/dx_n = (x_n / y) ** (p - 1) / N          (0 where x_n <= eps: the clamp)
    dy/dp   = y / p * mean_n[(x_n / y) ** p * ln(x_n / y)]

Three kernels compute it, with the same results to float32 rounding:

- on CPU for float32 (and float16 / bfloat16, converted), the fused native kernel of
  :mod:`poolwise.kernels.ggem`: one pass over x forward and one backward, no N x C temporary;
- on CUDA for float32 / float16 / bfloat16, the fused Triton kernel of
  :mod:`poolwise.kernels.ggem_triton` (one pass each way, max-shifted as it goes), once it has
  passed its first-use check on the device;
- elsewhere (float64, or without either kernel) PyTorch ops in log2 space,
  ``y = 2 ** (log2(mean_n 2 ** (p log2 x)) / p)``, over batch chunks that fit in cache.

Both sum the powers unshifted. Where a sum overflows or underflows (large p, large or tiny x,
any dtype), or an input is inf or NaN, those batch rows are recomputed with a per-channel max
shift, ``y = 2 ** (m + log2(mean 2 ** (p (log2 x - m))) / p)`` with ``m = max_n log2 x``, so
every power lies in (0, 1] and nothing overflows whatever p or the input.
:func:`ggem_reference` is the same max-shifted formula from plain ops, used for exports,
tracing and tests.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from poolwise._deprecate import renamed_keyword
from poolwise.pooling._shapes import channel_view, compute_dtype, reduce_dims, to_bc
from poolwise.pooling.ggem_autograd import GGeMFunction

__all__ = [
    "avg_pool",
    "avgmax_pool",
    "drop_prefix_tokens",
    "expand_group_exponents",
    "gem",
    "ggem",
    "ggem_reference",
    "max_pool",
    "normalize_channel_dim",
    "permutation_for_group_order",
    "permutation_for_layout",
    "token_pool",
]

GROUP_ORDERS = ("contiguous", "interleaved")  # which channels form group g of GGeM


def normalize_channel_dim(x: Tensor, channel_dim: int) -> int:
    """Checks the input rank and returns ``channel_dim`` as a non-negative index.

    Raises:
        ValueError: if ``x`` has no dim left to pool, or ``channel_dim`` is the batch dim or out
            of range.
    """
    if x.ndim < 3:
        raise ValueError(
            f"pooling needs an input with a batch dim, a channel dim and at least one dim to "
            f"pool, e.g. tokens (B, N, C) or maps (B, C, H, W); got shape {tuple(x.shape)}"
        )
    if not -x.ndim <= channel_dim < x.ndim:
        raise ValueError(f"channel_dim={channel_dim} is out of range for shape {tuple(x.shape)}")
    cdim = channel_dim % x.ndim
    if cdim == 0:
        raise ValueError(f"channel_dim={channel_dim} points at the batch dim of {tuple(x.shape)}")
    if x.numel() == 0:
        shape = tuple(x.shape)
        if shape[0] == 0:
            raise ValueError(f"empty batch: input of shape {shape} has no sample to pool")
        if shape[cdim] == 0:
            raise ValueError(f"input of shape {shape} has no channels at dim {channel_dim}")
        raise ValueError(f"input of shape {shape} has no tokens/positions to pool (an empty "
                         "dim other than the batch and channel dims)")
    return cdim


def drop_prefix_tokens(x: Tensor, num_prefix_tokens: int, *, channel_dim: int = -1) -> Tensor:
    """Removes the first ``num_prefix_tokens`` tokens (CLS, registers) of a (B, N, C) input.

    Prefix tokens only exist in token inputs, so a non-zero count with any other inputs is an
    error rather than a silent slice of a spatial or time axis.
    """
    if num_prefix_tokens == 0:
        return x
    cdim = normalize_channel_dim(x, channel_dim)
    if num_prefix_tokens < 0:
        raise ValueError(f"num_prefix_tokens must be >= 0, got {num_prefix_tokens}")
    if x.ndim != 3 or cdim != 2:
        raise ValueError(
            f"num_prefix_tokens={num_prefix_tokens} needs token inputs (B, N, C) with "
            f"channel_dim=-1; got shape {tuple(x.shape)} with channel_dim={channel_dim}"
        )
    if num_prefix_tokens >= x.shape[1]:
        raise ValueError(
            f"num_prefix_tokens={num_prefix_tokens} leaves no token to pool in {tuple(x.shape)}"
        )
    return x[:, num_prefix_tokens:]


def as_tokens(x: Tensor, *, channel_dim: int = -1) -> Tensor:
    """Any inputs as tokens ``(B, N, C)``: the positions of a map or series, in order."""
    cdim = normalize_channel_dim(x, channel_dim)
    return x.movedim(cdim, -1).flatten(1, -2)


def token_pool(x: Tensor, *, channel_dim: int = -1) -> Tensor:
    """The first position (the CLS token for ViT tokens); (B, C)."""
    return as_tokens(x, channel_dim=channel_dim)[:, 0]


def avg_pool(x: Tensor, *, channel_dim: int = -1) -> Tensor:
    """Mean over every dim but batch and channel; (B, C)."""
    cdim = normalize_channel_dim(x, channel_dim)
    return to_bc(x.mean(reduce_dims(x.ndim, cdim), keepdim=True), x.shape[0], x.shape[cdim])


def max_pool(x: Tensor, *, channel_dim: int = -1) -> Tensor:
    """Max over every dim but batch and channel; (B, C)."""
    cdim = normalize_channel_dim(x, channel_dim)
    return to_bc(x.amax(reduce_dims(x.ndim, cdim), keepdim=True), x.shape[0], x.shape[cdim])


def avgmax_pool(x: Tensor, *, channel_dim: int = -1) -> Tensor:
    """0.5 * (mean + max), as timm's avgmax; (B, C)."""
    return 0.5 * (avg_pool(x, channel_dim=channel_dim) + max_pool(x, channel_dim=channel_dim))


def expand_group_exponents(p: Tensor, channels: int, group_order: str = "contiguous") -> Tensor:
    """Per-group exponents (G,) -> per-channel exponents (C,).

    ``contiguous``: channel c is in group c // (C // G) (the multi-head split of a ViT).
    ``interleaved``: channel c is in group c % G.
    """
    if p.ndim != 1 or p.numel() == 0:
        raise ValueError(
            f"p must be a 1-D tensor of G >= 1 group exponents, got shape {tuple(p.shape)}"
        )
    groups = p.numel()
    if channels % groups != 0:
        raise ValueError(f"C={channels} channels cannot be split into G={groups} equal groups")
    if group_order == "contiguous":
        return p.repeat_interleave(channels // groups)
    if group_order == "interleaved":
        return p.repeat(channels // groups)
    raise ValueError(f"group_order={group_order!r} is not one of {GROUP_ORDERS}")


def _check_ggem_args(x: Tensor, p: Tensor, channel_dim: int, eps: float) -> int:
    cdim = normalize_channel_dim(x, channel_dim)
    if not isinstance(p, Tensor):
        raise ValueError(f"p must be a 1-D tensor of group exponents, got {type(p).__name__}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if not (x.is_floating_point() and p.is_floating_point()):
        raise ValueError(f"ggem needs floating-point x and p, got {x.dtype} and {p.dtype}")
    return cdim


def _check_exponents(p: Tensor) -> None:
    """Raises ValueError unless every exponent is finite and > 0 (one host sync, on p only)."""
    if p.numel() == 0:
        return  # expand_group_exponents names this case
    low, high = torch.aminmax(p.detach())
    if not (float(low) > 0 and float(high) < math.inf):
        values = p.detach().cpu().tolist()
        bad = [v for v in values if not (0 < v < math.inf)]
        raise ValueError(
            f"every GGeM exponent p must be finite and > 0; got {bad[:4]} among {len(values)} "
            "(a NaN p usually means the optimizer diverged: lower the learning rate of p)"
        )


def ggem(
    x: Tensor,
    p: Tensor,
    *,
    channel_dim: int = -1,
    eps: float = 1e-6,
    group_order: str = "contiguous",
    layout: str | None = None,
) -> Tensor:
    """Group generalized mean pooling.

    Args:
        x: Input with batch dim 0 and channels at ``channel_dim``; every other dim is pooled.
            Values below ``eps`` are clamped to ``eps`` (the GeM convention).
        p: 1-D tensor of G finite exponents > 0; G must divide the channel count C.
        channel_dim: Where the channels are (-1 for tokens, 1 for maps).
        eps: Clamp floor; must be > 0.
        group_order: How channels map to groups: ``"contiguous"`` (channel c in group
            c // (C // G)) or ``"interleaved"`` (group c % G).
        layout: The former name of ``group_order`` (deprecated).

    Returns:
        (B, C) tensor in the input's dtype; computed in float32 (float64 for float64 input)
        whatever the input dtype and autocast state.

    Raises:
        ValueError: naming the value, for an empty dim, a p that is NaN, inf or <= 0, a G that
            does not divide C, or a bad ``channel_dim``, ``eps`` or ``group_order``.
    """
    if layout is not None:
        group_order = renamed_keyword("ggem", "layout", "group_order", layout, group_order,
                                      "contiguous")
    cdim = _check_ggem_args(x, p, channel_dim, eps)
    p_ch = expand_group_exponents(p, x.shape[cdim], group_order)
    if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return _reference(x, p_ch.to(x.device), eps, cdim)
    return _ggem_kernel(x, p, p_ch.to(x.device), float(eps), cdim)


@torch.compiler.disable
def _ggem_kernel(x: Tensor, p: Tensor, p_ch: Tensor, eps: float, cdim: int) -> Tensor:
    """The checked kernel call; torch.compile runs it as it is (its checks and overflow
    fallback read values on the host, which a graph cannot hold)."""
    _check_exponents(p)
    return GGeMFunction.apply(x, p_ch, eps, cdim)


def gem(x: Tensor, p: float | Tensor = 3.0, *, channel_dim: int = -1, eps: float = 1e-6) -> Tensor:
    """GeM: GGeM with a single group."""
    if not isinstance(p, Tensor):
        p = torch.tensor([float(p)], device=x.device)
    return ggem(x, p.reshape(1), channel_dim=channel_dim, eps=eps)


def ggem_reference(
    x: Tensor,
    p: Tensor,
    *,
    channel_dim: int = -1,
    eps: float = 1e-6,
    group_order: str = "contiguous",
    layout: str | None = None,
) -> Tensor:
    """GGeM from plain ops (clamp, amax, div, pow, mean, mul), for exports, tracing and tests.

    The per-channel max shift keeps ``(x / max) ** p <= 1``, so nothing overflows; it is
    computed in float32 (float64 for float64 input) and differentiated by autograd, which
    saves several N x C tensors: use :func:`ggem` for real work.
    """
    if layout is not None:
        group_order = renamed_keyword("ggem_reference", "layout", "group_order", layout,
                                      group_order, "contiguous")
    cdim = _check_ggem_args(x, p, channel_dim, eps)
    p_ch = expand_group_exponents(p, x.shape[cdim], group_order).to(x.device)
    return _reference(x, p_ch, eps, cdim)


def _reference(x: Tensor, p_ch: Tensor, eps: float, cdim: int) -> Tensor:
    dims = reduce_dims(x.ndim, cdim)
    xc = x.to(compute_dtype(x)).clamp(min=eps)
    p_v = channel_view(p_ch.to(xc.dtype), x.ndim, cdim)
    top = xc.amax(dim=dims, keepdim=True)
    pooled = top * (xc / top).pow(p_v).mean(dim=dims, keepdim=True).pow(1.0 / p_v)
    return to_bc(pooled, x.shape[0], x.shape[cdim]).to(x.dtype)


def permutation_for_group_order(channels: int, groups: int) -> Sequence[int]:
    """Channel order that turns an interleaved grouping into a contiguous one.

    ``ggem(x[..., perm], p) == ggem(x, p, group_order="interleaved")[..., perm]``.
    """
    if channels % groups != 0:
        raise ValueError(f"C={channels} channels cannot be split into G={groups} equal groups")
    return [g + groups * i for g in range(groups) for i in range(channels // groups)]


def permutation_for_layout(channels: int, groups: int) -> Sequence[int]:
    """The former name of :func:`permutation_for_group_order` (deprecated)."""
    warnings.warn("permutation_for_layout is renamed permutation_for_group_order",
                  DeprecationWarning, stacklevel=2)
    return permutation_for_group_order(channels, groups)
