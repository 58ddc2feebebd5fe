"""Every registered pool: its registry entry, and its use as a timm ViT head and as L-SFAN's
oriented pool."""

import pytest
import torch

from poolwise.pooling import create_pool, list_pools, pool_info
from poolwise.pooling.registry import LAYOUTS

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
    assert set(info.layouts) <= set(LAYOUTS) and set(info.needs) <= {"num_channels", "groups"}
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


@pytest.mark.parametrize("name", list_pools())
def test_every_pool_heads_a_timm_vit_and_trains(name):
    from poolwise.vision import create_model

    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", pool=name, num_classes=3, img_size=28,
                         patch_size=7, embed_dim=24, depth=1, num_heads=2, in_chans=1)
    images = torch.randn(2, 1, 28, 28)
    model(images).logsumexp(-1).sum().backward()
    for key, param in model.pool.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), key
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(images), model(images), rtol=0, atol=0)


@pytest.mark.parametrize("name", list_pools())
def test_every_pool_is_an_lsfan_oriented_pool(name):
    from poolwise.pain import LSFAN

    torch.manual_seed(0)
    model = LSFAN(pool=name)
    logits = model(torch.randn(3, 30, 180))
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()
