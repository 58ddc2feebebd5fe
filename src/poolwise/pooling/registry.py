"""The single source of pool names and what they are: ``create_pool(name, ...)``,
``list_pools()``, ``pool_info(name)``.

Every factory takes the same keywords so that callers (ViT heads, CNN heads, L-SFAN) can build
any pool from a name: ``num_channels`` (C) and ``groups`` (G, e.g. the number of attention
heads) are used by the pools that need them and ignored by the others; everything else goes to
the pool's constructor. Each entry records its family, what it learns, the inputs it takes and
where its implementation comes from; the CLI's choices and every name check read this registry.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from poolwise._deprecate import renamed_keyword
from poolwise.pooling import attention
from poolwise.pooling.modules import AvgMaxPool, AvgPool, GGeM, MaxPool, TokenPool

PoolFactory = Callable[..., nn.Module]
INPUTS = ("tokens", "maps", "series")  # what a pool takes: (B, N, C), (B, C, H, W), (B, C, T)
# what a comparison pits GGeM against by default: every pool a user would pick today
COMPARED = ("token", "avg", "max", "gem", "ggem", "map", "prr", "simpool", "lse")


@dataclass(frozen=True)
class PoolInfo:
    """What the registry knows of a pool.

    ``learnable`` names the pool's own parameters ("" for none); ``needs`` the keywords of
    :func:`create_pool` it cannot do without (a model head gives ``groups`` its number of
    attention heads); ``cls_token`` whether it reads a model's CLS token, so only models with
    one can take it; ``source`` the implementation (poolwise's own, or the timm layer it
    wraps).
    """

    name: str
    description: str
    family: str
    learnable: str
    inputs: tuple[str, ...]
    needs: tuple[str, ...]
    source: str
    factory: PoolFactory
    cls_token: bool = False

    @property
    def layouts(self) -> tuple[str, ...]:
        """The former name of ``inputs`` (deprecated)."""
        warnings.warn("PoolInfo.layouts is renamed PoolInfo.inputs", DeprecationWarning,
                      stacklevel=2)
        return self.inputs


_REGISTRY: dict[str, PoolInfo] = {}


def register_pool(name: str, description: str, *, family: str, learnable: str = "",
                  inputs: tuple[str, ...] = INPUTS, needs: tuple[str, ...] = (),
                  source: str = "poolwise", cls_token: bool = False,
                  layouts: tuple[str, ...] | None = None,
                  ) -> Callable[[PoolFactory], PoolFactory]:
    """Decorator that adds a factory ``f(num_channels, groups, **kwargs) -> nn.Module``.

    ``inputs``: the shapes of :data:`INPUTS` the pool takes (``layouts`` is its former name,
    deprecated)."""
    inputs = renamed_keyword("register_pool", "layouts", "inputs", layouts, inputs, INPUTS)

    def add(factory: PoolFactory) -> PoolFactory:
        if name in _REGISTRY:
            raise ValueError(f"pool {name!r} is already registered")
        unknown = sorted(set(inputs) - set(INPUTS))
        if unknown:
            raise ValueError(f"pool {name!r}: unknown inputs {unknown}; known: {INPUTS}")
        _REGISTRY[name] = PoolInfo(name, description, family, learnable, tuple(inputs),
                                   tuple(needs), source, factory, cls_token)
        return factory

    return add


def list_pools() -> list[str]:
    """Registered pool names, sorted."""
    return sorted(_REGISTRY)


def pool_info(name: str) -> PoolInfo:
    """The registry entry of ``name``.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown pool {name!r}; known pools: {', '.join(list_pools())}")
    return _REGISTRY[name]


def describe_pools() -> dict[str, str]:
    """Name -> one-line description, for help texts."""
    return {name: _REGISTRY[name].description for name in list_pools()}


def create_pool(
    name: str, *, num_channels: int | None = None, groups: int | None = None, **kwargs: Any
) -> nn.Module:
    """Builds the pool registered as ``name``.

    Raises:
        ValueError: for an unknown name (the message lists the known ones) or arguments the
            pool cannot use.
    """
    return pool_info(name).factory(num_channels, groups, **kwargs)


@register_pool("token", "the CLS token (first position)", family="position", cls_token=True)
def _token(num_channels, groups, **kwargs):
    return TokenPool(**kwargs)


@register_pool("avg", "mean over tokens/positions", family="mean")
def _avg(num_channels, groups, **kwargs):
    return AvgPool(**kwargs)


@register_pool("max", "max over tokens/positions", family="max")
def _max(num_channels, groups, **kwargs):
    return MaxPool(**kwargs)


@register_pool("avgmax", "0.5 * (mean + max)", family="mean")
def _avgmax(num_channels, groups, **kwargs):
    return AvgMaxPool(**kwargs)


@register_pool("gem", "generalized mean, one learnable p", family="generalized mean",
               learnable="p (1)")
def _gem(num_channels, groups, **kwargs):
    return GGeM(1, num_channels=num_channels, **kwargs)


@register_pool("ggem", "group generalized mean, one learnable p per channel group",
               family="generalized mean", learnable="p per group (G)", needs=("groups",))
def _ggem(num_channels, groups, **kwargs):
    if groups is None:
        raise ValueError("pool 'ggem' needs groups=G (e.g. the number of attention heads)")
    return GGeM(groups, num_channels=num_channels, **kwargs)


@register_pool("cgem", "channel-wise generalized mean, one learnable p per channel",
               family="generalized mean", learnable="p per channel (C)",
               needs=("num_channels",))
def _cgem(num_channels, groups, **kwargs):
    if num_channels is None:
        raise ValueError("pool 'cgem' needs num_channels=C (one p per channel)")
    return GGeM(num_channels, num_channels=num_channels, **kwargs)


register_pool("map", "attention pooling with a learned latent query, then an MLP",
              family="attention", learnable="latent query, q/kv/out projections, MLP",
              needs=("num_channels",), source="timm.layers.AttentionPoolLatent")(
    attention.latent_attention_pool)
register_pool("prr", "parameter-free self-attention refines the tokens, then their mean",
              family="attention", needs=("num_channels",),
              source="timm.layers.AttentionPoolPrr")(attention.prr_pool)
register_pool("simpool", "SimPool: the mean token queries one attention over the tokens",
              family="attention", learnable="q/k projections, LayerNorm",
              needs=("num_channels",), source="timm.layers.SimPool1d")(attention.simpool)
register_pool("lse", "log-mean-exp, a learnable sharpness r between mean and max",
              family="smooth max", learnable="r (1)", source="timm.layers.LsePlus1d")(
    attention.lse_pool)
