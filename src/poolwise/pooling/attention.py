"""Pools with attention or a learnable sharpness, wrapping timm's layers (not rewritten).

Every wrapper is a :class:`~poolwise.pooling.modules.GlobalPool`: it drops the prefix tokens,
flattens any inputs to tokens ``(B, N, C)`` (maps ``(B, C, H, W)`` and series ``(B, C, T)``
with ``channel_dim=1``: their positions become the tokens, as timm's 2-D variants do) and calls
the timm layer, which returns ``(B, C)``:

- ``map``: :class:`timm.layers.AttentionPoolLatent`, a learned latent query attending over the
  tokens, then an MLP (timm's ViT ``global_pool="map"``, SigLIP's head);
- ``prr``: :class:`timm.layers.AttentionPoolPrr`, parameter-free multi-head self-attention that
  refines every token, then their mean (timm's ViT ``global_pool="prr"`` reads the refined CLS
  token instead: ``include_prefix_tokens=True`` with ``pool_type="token"`` gives that form);
- ``simpool``: :class:`timm.layers.SimPool1d`, the mean token as the query of one attention
  over the layer-normed tokens (Psomas et al., ICCV 2023);
- ``lse``: :class:`timm.layers.LsePlus1d`, log-mean-exp with a learnable sharpness r, between
  the mean (small r) and the max (large r).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from poolwise.pooling import functional as PF
from poolwise.pooling.modules import GlobalPool


class TimmPool(GlobalPool):
    """A timm pooling layer over tokens ``(B, N, C)`` behind poolwise's pool interface."""

    def __init__(self, layer: nn.Module, *, num_channels: int | None = None,
                 channel_dim: int = -1, num_prefix_tokens: int = 0) -> None:
        super().__init__(channel_dim=channel_dim, num_prefix_tokens=num_prefix_tokens)
        self.layer = layer
        self.num_channels = num_channels

    def pool(self, x: Tensor) -> Tensor:
        tokens = PF.as_tokens(x, channel_dim=self.channel_dim)
        if self.num_channels is not None and tokens.shape[-1] != self.num_channels:
            raise ValueError(f"{type(self.layer).__name__} was built for {self.num_channels} "
                             f"channels; the input of shape {tuple(x.shape)} has "
                             f"{tokens.shape[-1]} at dim {self.channel_dim}")
        return self.layer(tokens)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_channels={self.num_channels}"


def default_heads(num_channels: int, groups: int | None) -> int:
    """``groups`` (the attention heads of the backbone) where given, else the largest divisor
    of C not above 8."""
    if groups is not None:
        if num_channels % groups:
            raise ValueError(f"{groups} heads do not divide num_channels={num_channels}")
        return groups
    return max(h for h in range(1, 9) if num_channels % h == 0)


def _needs_channels(name: str, num_channels: int | None) -> int:
    if num_channels is None:
        raise ValueError(f"pool {name!r} needs num_channels=C (its layers are sized by C)")
    return num_channels


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(poolwise's interface keywords, the timm layer's keywords)."""
    ours = {k: kwargs.pop(k) for k in ("channel_dim", "num_prefix_tokens") if k in kwargs}
    return ours, kwargs


def latent_attention_pool(num_channels: int | None, groups: int | None,
                          **kwargs: Any) -> TimmPool:
    from timm.layers import AttentionPoolLatent

    c = _needs_channels("map", num_channels)
    ours, theirs = _split(kwargs)
    theirs.setdefault("num_heads", default_heads(c, groups))
    theirs.setdefault("norm_layer", nn.LayerNorm)
    return TimmPool(AttentionPoolLatent(c, **theirs), num_channels=c, **ours)


def prr_pool(num_channels: int | None, groups: int | None, **kwargs: Any) -> TimmPool:
    from timm.layers import AttentionPoolPrr

    c = _needs_channels("prr", num_channels)
    ours, theirs = _split(kwargs)
    theirs.setdefault("num_heads", default_heads(c, groups))
    theirs.setdefault("pool_type", "avg")
    return TimmPool(AttentionPoolPrr(c, **theirs), num_channels=c, **ours)


def simpool(num_channels: int | None, groups: int | None, **kwargs: Any) -> TimmPool:
    from timm.layers import SimPool1d

    c = _needs_channels("simpool", num_channels)
    ours, theirs = _split(kwargs)
    return TimmPool(SimPool1d(c, **theirs), num_channels=c, **ours)


def lse_pool(num_channels: int | None, groups: int | None, **kwargs: Any) -> TimmPool:
    from timm.layers import LsePlus1d

    ours, theirs = _split(kwargs)
    return TimmPool(LsePlus1d(**theirs), num_channels=num_channels, **ours)
