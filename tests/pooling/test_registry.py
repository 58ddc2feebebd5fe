"""Every registered pool: its registry entry, and its use as a timm ViT head and as L-SFAN's
oriented pool."""

import pytest
import torch

from poolwise.pooling import channel_groups, create_pool, learned_exponents, list_pools, pool_info
from poolwise.pooling.registry import INPUTS

TIMM_WRAPPED = {"map": "AttentionPoolLatent", "prr": "AttentionPoolPrr", "simpool": "SimPool1d",
                "lse": "LsePlus1d"}


def test_the_modern_pools_wrap_timm_layers():
    assert set(TIMM_WRAPPED) <= set(list_pools())
    for name, layer in TIMM_WRAPPED.items():
        pool = create_pool(name, num_channels=12, groups=3)
        assert type(pool.layer).__name__ == layer  # timm's own layer, not a copy
        assert type(pool.layer).__module__.startswith("timm.layers")
        assert pool_info(name).source == f"timm.layers.{layer}"


@pytest.mark.parametrize("name", list_pools())
def test_registry_entries_say_what_a_pool_is(name):
    info = pool_info(name)
    assert info.name == name and info.description and info.family
    assert set(info.inputs) <= set(INPUTS) and set(info.needs) <= {"num_channels", "groups"}
    pool = create_pool(name, num_channels=12, groups=3)
    has_parameters = any(True for _ in pool.parameters())
    assert has_parameters == bool(info.learnable), f"{name}: learnable={info.learnable!r}"
    for keyword in info.needs:  # a pool that needs C or G says so when it lacks it
        with pytest.raises(ValueError, match=keyword):
            create_pool(name, **{"num_channels": 12, "groups": 3, keyword: None})


def test_comparisons_default_to_every_modern_pool():
    from poolwise.pooling.registry import COMPARED

    assert set(TIMM_WRAPPED) | {"token", "avg", "max", "gem", "ggem"} <= set(COMPARED)
    assert set(COMPARED) <= set(list_pools())


def test_pool_info_names_the_known_pools():
    with pytest.raises(ValueError, match=r"unknown pool 'mean'; known pools: avg, avgmax"):
        pool_info("mean")


def test_the_registry_says_which_pools_read_the_cls_token_and_take_groups():
    assert [n for n in list_pools() if pool_info(n).cls_token] == ["token"]
    assert [n for n in list_pools() if "groups" in pool_info(n).needs] == ["ggem"]


def test_learned_exponents_and_groups_come_from_generalized_mean_pools_only():
    for name in list_pools():
        pool = create_pool(name, num_channels=8, groups=4)
        p, groups = learned_exponents(pool), channel_groups(pool)
        if pool_info(name).family == "generalized mean":
            assert groups == {"gem": 1, "ggem": 4, "cgem": 8}[name]
            torch.testing.assert_close(p, torch.full((groups,), 3.0))
        else:
            assert p is None and groups is None


def test_the_former_names_layout_and_layouts_still_work_and_warn():
    with pytest.warns(DeprecationWarning, match="layout= is renamed group_order="):
        pool = create_pool("ggem", num_channels=8, groups=2, layout="interleaved")
    assert pool.group_order == "interleaved"
    info = pool_info("ggem")
    with pytest.warns(DeprecationWarning, match="PoolInfo.inputs"):
        assert info.layouts == info.inputs == INPUTS
