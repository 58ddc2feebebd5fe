"""Pooling operators shared by the ViT heads and the L-SFAN sensor network.

Pure functions live in :mod:`~poolwise.pooling.functional`, thin modules in
:mod:`~poolwise.pooling.modules`, and the names in :mod:`~poolwise.pooling.registry`.
"""

from poolwise.pooling.attention import TimmPool
from poolwise.pooling.functional import (
    avg_pool,
    avgmax_pool,
    gem,
    ggem,
    ggem_reference,
    max_pool,
    token_pool,
)
from poolwise.pooling.modules import (
    AvgMaxPool,
    AvgPool,
    GGeM,
    GlobalPool,
    MaxPool,
    TokenPool,
    channel_groups,
    learned_exponents,
)
from poolwise.pooling.registry import (
    PoolInfo,
    create_pool,
    describe_pools,
    list_pools,
    pool_info,
    register_pool,
)

__all__ = [
    "AvgMaxPool",
    "AvgPool",
    "GGeM",
    "GlobalPool",
    "MaxPool",
    "PoolInfo",
    "TimmPool",
    "TokenPool",
    "avg_pool",
    "avgmax_pool",
    "channel_groups",
    "create_pool",
    "describe_pools",
    "gem",
    "ggem",
    "ggem_reference",
    "learned_exponents",
    "list_pools",
    "max_pool",
    "pool_info",
    "register_pool",
    "token_pool",
]
