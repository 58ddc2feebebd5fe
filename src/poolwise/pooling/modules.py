"""Thin nn.Modules over :mod:`poolwise.pooling.functional`.

Each pool maps an input with batch dim 0 and channels at ``channel_dim`` to (B, C). Token inputs
(B, N, C) may start with ``num_prefix_tokens`` CLS/register tokens, which every pool but
``TokenPool`` drops before pooling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from poolwise._deprecate import renamed_keyword
from poolwise.pooling import functional as PF

NEGATIVE_MODES = ("clamp", "softplus")


class GlobalPool(nn.Module):
    """Base class: handles the channel dim and prefix tokens; subclasses implement ``pool``."""

    def __init__(self, *, channel_dim: int = -1, num_prefix_tokens: int = 0) -> None:
        super().__init__()
        if num_prefix_tokens < 0:
            raise ValueError(f"num_prefix_tokens must be >= 0, got {num_prefix_tokens}")
        self.channel_dim = channel_dim
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, x: Tensor) -> Tensor:
        x = PF.drop_prefix_tokens(x, self.num_prefix_tokens, channel_dim=self.channel_dim)
        return self.pool(x)

    def pool(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"channel_dim={self.channel_dim}, num_prefix_tokens={self.num_prefix_tokens}"


class TokenPool(GlobalPool):
    """The CLS token (the first position); ``num_prefix_tokens`` is ignored."""

    def forward(self, x: Tensor) -> Tensor:
        return PF.token_pool(x, channel_dim=self.channel_dim)


class AvgPool(GlobalPool):
    def pool(self, x: Tensor) -> Tensor:
        return PF.avg_pool(x, channel_dim=self.channel_dim)


class MaxPool(GlobalPool):
    def pool(self, x: Tensor) -> Tensor:
        return PF.max_pool(x, channel_dim=self.channel_dim)


class AvgMaxPool(GlobalPool):
    def pool(self, x: Tensor) -> Tensor:
        return PF.avgmax_pool(x, channel_dim=self.channel_dim)


class GGeM(GlobalPool):
    """Group generalized mean pooling with one exponent per channel group.

    ``groups=1`` is GeM, ``groups=C`` is channel-wise GeM (cgem).

    Args:
        groups: Number of channel groups G (for a ViT head: the number of attention heads).
        num_channels: C, checked against the input when given; must be divisible by G.
        p: Initial exponent of every group (3.0 is the GeM convention).
        learnable: If False, p is a buffer (frozen) instead of a parameter.
        p_min: Lower bound on p, > 0. The bound is applied in the forward pass with a
            straight-through gradient, so p never drops below it in the computation (no NaN
            however far an optimizer pushes the parameter) yet can always climb back.
        eps: Clamp floor of the input.
        negative: What happens to inputs below ``eps``. ``"clamp"`` (default, GeM convention):
            they become ``eps``, which for signed ViT tokens zeroes about half of the values.
            ``"softplus"``: the input goes through softplus first, a smooth, monotone map to
            (0, inf) that keeps the ordering of negative values (at the cost of an extra
            N x C tensor saved for backward).
        group_order: ``"contiguous"`` (channel c in group c // (C // G), the multi-head split)
            or ``"interleaved"`` (group c % G).
        layout: The former name of ``group_order`` (deprecated).
    """

    def __init__(
        self,
        groups: int = 1,
        *,
        num_channels: int | None = None,
        p: float = 3.0,
        learnable: bool = True,
        p_min: float = 1.0,
        eps: float = 1e-6,
        negative: str = "clamp",
        group_order: str = "contiguous",
        layout: str | None = None,
        channel_dim: int = -1,
        num_prefix_tokens: int = 0,
    ) -> None:
        super().__init__(channel_dim=channel_dim, num_prefix_tokens=num_prefix_tokens)
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"groups must be a positive int, got {groups!r}")
        if num_channels is not None and num_channels % groups != 0:
            raise ValueError(
                f"num_channels={num_channels} cannot be split into groups={groups} equal groups"
            )
        if not 0 < p_min < math.inf:
            raise ValueError(f"p_min must be finite and > 0, got {p_min}")
        if not p_min <= p < math.inf:
            raise ValueError(f"initial p={p} must be finite and >= p_min={p_min}")
        if not 0 < eps < math.inf:
            raise ValueError(f"eps must be finite and > 0, got {eps}")
        if negative not in NEGATIVE_MODES:
            raise ValueError(f"negative={negative!r} is not one of {NEGATIVE_MODES}")
        group_order = renamed_keyword("GGeM", "layout", "group_order", layout, group_order,
                                      "contiguous")
        if group_order not in PF.GROUP_ORDERS:
            raise ValueError(f"group_order={group_order!r} is not one of {PF.GROUP_ORDERS}")
        self.groups = groups
        self.num_channels = num_channels
        self.p_min = p_min
        self.eps = eps
        self.negative = negative
        self.group_order = group_order
        init = torch.full((groups,), float(p))
        if learnable:
            self.p = nn.Parameter(init)
        else:
            self.register_buffer("p", init)

    @property
    def learnable(self) -> bool:
        return isinstance(self.p, nn.Parameter)

    def effective_p(self) -> Tensor:
        """p as used in the forward pass: bounded below by ``p_min``, straight-through grad."""
        p = self.p
        return p + (p.clamp(min=self.p_min) - p).detach()

    def pool(self, x: Tensor) -> Tensor:
        cdim = PF.normalize_channel_dim(x, self.channel_dim)
        if self.num_channels is not None and x.shape[cdim] != self.num_channels:
            raise ValueError(
                f"expected {self.num_channels} channels at dim {self.channel_dim}, got input "
                f"of shape {tuple(x.shape)}"
            )
        if self.negative == "softplus":
            x = F.softplus(x)
        p = self.effective_p().to(x.device)
        return PF.ggem(x, p, channel_dim=self.channel_dim, eps=self.eps,
                        group_order=self.group_order)

    def extra_repr(self) -> str:
        values = self.effective_p().detach().cpu().tolist()
        shown = ", ".join(f"{v:.3g}" for v in values[:16])
        if len(values) > 16:
            shown += f", ... ({len(values)} groups)"
        return (
            f"groups={self.groups}, p=[{shown}], learnable={self.learnable}, "
            f"p_min={self.p_min}, negative={self.negative!r}, group_order={self.group_order!r}, "
            + super().extra_repr()
        )


def learned_exponents(pool: nn.Module) -> Tensor | None:
    """The effective exponents p of a generalized-mean pool (GeM: one, GGeM: one per group,
    CGeM: one per channel), None for a pool without them."""
    return pool.effective_p() if isinstance(pool, GGeM) else None


def channel_groups(pool: nn.Module) -> int | None:
    """The number of channel groups of a generalized-mean pool, None for other pools."""
    return pool.groups if isinstance(pool, GGeM) else None
