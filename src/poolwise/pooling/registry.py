"""The single source of pool names: ``create_pool(name, ...)`` and ``list_pools()``.

Every factory takes the same keywords so that callers (ViT heads, CNN heads, L-SFAN) can build
any pool from a name: ``num_channels`` (C) and ``groups`` (G, e.g. the number of attention
heads) are used by the pools that need them and ignored by the others; everything else goes to
the pool's constructor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from poolwise.pooling.modules import AvgMaxPool, AvgPool, GGeM, MaxPool, TokenPool

PoolFactory = Callable[..., nn.Module]

_REGISTRY: dict[str, tuple[PoolFactory, str]] = {}


def register_pool(name: str, description: str) -> Callable[[PoolFactory], PoolFactory]:
    """Decorator that adds a factory ``f(num_channels, groups, **kwargs) -> nn.Module``."""

    def add(factory: PoolFactory) -> PoolFactory:
        if name in _REGISTRY:
            raise ValueError(f"pool {name!r} is already registered")
        _REGISTRY[name] = (factory, description)
        return factory

    return add


def list_pools() -> list[str]:
    """Registered pool names, sorted."""
    return sorted(_REGISTRY)


def describe_pools() -> dict[str, str]:
    """Name -> one-line description, for help texts."""
    return {name: _REGISTRY[name][1] for name in list_pools()}


def create_pool(
    name: str, *, num_channels: int | None = None, groups: int | None = None, **kwargs: Any
) -> nn.Module:
    """Builds the pool registered as ``name``.

    Raises:
        ValueError: for an unknown name (the message lists the known ones) or arguments the
            pool cannot use.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown pool {name!r}; known pools: {', '.join(list_pools())}")
    factory, _ = _REGISTRY[name]
    return factory(num_channels, groups, **kwargs)


@register_pool("token", "the CLS token (first position)")
def _token(num_channels, groups, **kwargs):
    return TokenPool(**kwargs)


@register_pool("avg", "mean over tokens/positions")
def _avg(num_channels, groups, **kwargs):
    return AvgPool(**kwargs)


@register_pool("max", "max over tokens/positions")
def _max(num_channels, groups, **kwargs):
    return MaxPool(**kwargs)


@register_pool("avgmax", "0.5 * (mean + max)")
def _avgmax(num_channels, groups, **kwargs):
    return AvgMaxPool(**kwargs)


@register_pool("gem", "generalized mean, one learnable p")
def _gem(num_channels, groups, **kwargs):
    return GGeM(1, num_channels=num_channels, **kwargs)


@register_pool("ggem", "group generalized mean, one learnable p per channel group")
def _ggem(num_channels, groups, **kwargs):
    if groups is None:
        raise ValueError("pool 'ggem' needs groups=G (e.g. the number of attention heads)")
    return GGeM(groups, num_channels=num_channels, **kwargs)


@register_pool("cgem", "channel-wise generalized mean, one learnable p per channel")
def _cgem(num_channels, groups, **kwargs):
    if num_channels is None:
        raise ValueError("pool 'cgem' needs num_channels=C (one p per channel)")
    return GGeM(num_channels, num_channels=num_channels, **kwargs)
