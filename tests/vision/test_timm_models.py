import logging

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from poolwise.pooling import list_pools
from poolwise.vision import create_model, load_checkpoint, param_groups

# real timm names, shrunk (depth 1, small images) so the contract runs in seconds
VIT_CASES = {
    "vit_tiny_patch16_224": dict(img_size=32, patch_size=8, depth=1),
    "deit3_small_patch16_224": dict(img_size=32, patch_size=8, depth=1),
    "eva02_tiny_patch14_224": dict(img_size=28, depth=1),
    "vit_small_patch14_dinov2": dict(img_size=28, depth=1),
    "vit_small_patch14_reg4_dinov2": dict(img_size=28, depth=1),
    "beit_base_patch16_224": dict(img_size=32, depth=1),
}


@pytest.mark.parametrize("pool", list_pools())
@pytest.mark.parametrize("name", sorted(VIT_CASES))
def test_contract_over_timm_vits_and_pools(name, pool):
    kwargs = VIT_CASES[name]
    torch.manual_seed(0)
    model = create_model(name, pool=pool, num_classes=5, **kwargs)
    x = torch.randn(2, 3, kwargs["img_size"], kwargs["img_size"], requires_grad=True)
    features = model.forward_features(x)
    assert features.ndim == 3 and features.shape[-1] == model.num_features
    assert model.num_prefix_tokens == model.backbone.num_prefix_tokens
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    logits = model.forward_head(features)
    assert logits.shape == (2, 5) and model.num_classes == 5
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    if pool in ("gem", "ggem", "cgem"):
        assert model.pool.p.grad is not None and torch.isfinite(model.pool.p.grad).all()
    if pool == "ggem":
        assert model.groups == model.num_heads == model.backbone.blocks[-1].attn.num_heads
        assert model.pool.p.shape == (model.num_heads,)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)


def _final_norm_input(backbone, x):
    """The tokens entering timm's final norm (the last block's output)."""
    seen = {}
    layer = backbone.norm if not isinstance(backbone.norm, nn.Identity) else backbone.fc_norm
    hook = layer.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    backbone(x)
    hook.remove()
    return seen["x"], layer


def test_prefix_tokens_are_excluded_and_norm_placement(tmp_path):
    import timm

    torch.manual_seed(0)
    kwargs = VIT_CASES["vit_small_patch14_reg4_dinov2"]
    reference = timm.create_model("vit_small_patch14_reg4_dinov2", num_classes=4, **kwargs).eval()
    path = tmp_path / "timm.safetensors"
    save_file(reference.state_dict(), str(path))
    x = torch.randn(3, 3, 28, 28)
    tokens, layer = _final_norm_input(reference, x)
    assert reference.num_prefix_tokens == 5

    on_tokens = create_model("vit_small_patch14_reg4_dinov2", pool="avg", num_classes=4,
                             checkpoint=path, **kwargs).eval()
    expected = layer(tokens)[:, 5:].mean(dim=1)
    torch.testing.assert_close(on_tokens(x) , reference.head(expected))
    torch.testing.assert_close(on_tokens.forward_head(on_tokens.forward_features(x), True),
                               expected)

    pooled = create_model("vit_small_patch14_reg4_dinov2", pool="avg", norm="pooled",
                          num_classes=4, checkpoint=path, **kwargs).eval()
    assert pooled.load_report.new == [] and pooled.load_report.unexpected == []
    torch.testing.assert_close(pooled.forward_head(pooled.forward_features(x), True),
                               layer(tokens[:, 5:].mean(dim=1)))

    with_prefix = create_model("vit_small_patch14_reg4_dinov2", pool="avg", num_classes=4,
                               include_prefix_tokens=True, checkpoint=path, **kwargs).eval()
    torch.testing.assert_close(with_prefix.forward_head(with_prefix.forward_features(x), True),
                               layer(tokens).mean(dim=1))


def test_load_checkpoint_reports_new_skipped_and_unexpected_keys(tmp_path):
    import timm

    kwargs = VIT_CASES["vit_tiny_patch16_224"]
    state = timm.create_model("vit_tiny_patch16_224", num_classes=7, **kwargs).state_dict()
    path = tmp_path / "timm.pth"
    torch.save({"state_dict": state}, path)
    model = create_model("vit_tiny_patch16_224", pool="ggem", num_classes=3, checkpoint=path,
                         **kwargs)
    report = model.load_report
    assert report.new == ["pool.p"]
    assert sorted(report.skipped_shape) == ["backbone.head.bias", "backbone.head.weight"]
    assert report.loaded == len(state) - 2
    assert any("pool.p" in line for line in report.lines())
    torch.testing.assert_close(model.backbone.pos_embed, state["pos_embed"])

    state["extra.weight"] = torch.zeros(2)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"extra\.weight"):
        create_model("vit_tiny_patch16_224", pool="ggem", num_classes=7, checkpoint=path, **kwargs)
    report = load_checkpoint(model, path, strict=False)
    assert report.unexpected == ["backbone.extra.weight"]

    del state["extra.weight"], state["blocks.0.mlp.fc1.weight"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing 1 backbone tensors: backbone\.blocks\.0\.mlp"):
        load_checkpoint(model, path)


def test_poolwise_checkpoint_round_trip_keeps_learned_p(tmp_path):
    kwargs = VIT_CASES["vit_tiny_patch16_224"]
    model = create_model("vit_tiny_patch16_224", pool="ggem", num_classes=3, **kwargs)
    with torch.no_grad():
        model.pool.p.copy_(torch.tensor([1.5, 2.5, 4.0]))
    path = tmp_path / "ours.safetensors"
    save_file(model.state_dict(), str(path))
    again = create_model("vit_tiny_patch16_224", pool="ggem", num_classes=3, checkpoint=path,
                         **kwargs)
    assert again.load_report.new == [] and again.p_values() == pytest.approx([1.5, 2.5, 4.0])
    assert "p=[1.5, 2.5, 4]" in repr(again.pool)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": nn.Linear(2, 2)}, path)  # a module object, not a state dict
    model = create_model("vit_tiny_patch16_224", pool="avg", **VIT_CASES["vit_tiny_patch16_224"])
    with pytest.raises(ValueError, match=r"evil\.pt"):
        load_checkpoint(model, path)


def test_cnn_backbone_pools_feature_maps():
    torch.manual_seed(0)
    model = create_model("resnet18", pool="gem", num_classes=4).eval()
    x = torch.randn(2, 3, 64, 64)
    fmap = model.forward_features(x)
    assert fmap.shape[:2] == (2, 512)
    expected = fmap.clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3)
    torch.testing.assert_close(model.forward_head(fmap, pre_logits=True), expected)
    ggem = create_model("resnet18", pool="ggem", groups=8, num_classes=4)
    assert ggem(x).shape == (2, 4) and ggem.pool.p.shape == (8,)
    with pytest.raises(ValueError, match="needs groups=G"):
        create_model("resnet18", pool="ggem")
    with pytest.raises(ValueError, match="CLS token"):
        create_model("resnet18", pool="token")


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="unknown timm model 'vit_nope'"):
        create_model("vit_nope")
    with pytest.raises(ValueError, match="pool=<name>"):
        create_model("vit_tiny_patch16_224", global_pool="avg")
    with pytest.raises(ValueError, match="unknown pool 'mean'"):
        create_model("vit_tiny_patch16_224", pool="mean", img_size=32, patch_size=8, depth=1)
    with pytest.raises(ValueError, match="distilled"):
        create_model("deit_tiny_distilled_patch16_224", img_size=32, patch_size=8, depth=1)
    with pytest.raises(ValueError, match="norm='middle'"):
        create_model("vit_tiny_patch16_224", norm="middle", img_size=32, patch_size=8, depth=1)
    with pytest.raises(ValueError, match="groups=5"):
        create_model("vit_tiny_patch16_224", groups=5, img_size=32, patch_size=8, depth=1)


def test_param_groups_put_p_alone_without_decay():
    model = create_model("vit_tiny_patch16_224", pool="ggem", **VIT_CASES["vit_tiny_patch16_224"])
    groups = param_groups(model, lr=1e-3, weight_decay=0.05, p_lr_mult=10.0)
    by_name = {g["name"]: g for g in groups}
    assert by_name["pool_p"]["params"] == [model.pool.p]
    assert by_name["pool_p"]["weight_decay"] == 0.0
    assert by_name["pool_p"]["lr_scale"] == pytest.approx(10.0)
    assert by_name["pool_p"]["lr"] == pytest.approx(1e-2)  # ready for any torch optimizer
    assert all(p.ndim >= 2 for p in by_name["decay"]["params"])
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(set(ids)) == len(ids)
    frozen = create_model("vit_tiny_patch16_224", pool="ggem", pool_kwargs={"learnable": False},
                          **VIT_CASES["vit_tiny_patch16_224"])
    assert "pool_p" not in {g["name"] for g in param_groups(frozen, lr=1, weight_decay=0)}


CITIZEN_CASES = {**{k: v for k, v in VIT_CASES.items() if k != "vit_small_patch14_dinov2"},
                 "vit_small_patch14_reg4_dinov2": dict(img_size=28, depth=2),
                 "vit_tiny_patch16_224": dict(img_size=32, patch_size=8, depth=2),
                 "resnet18": {}}


@pytest.mark.parametrize("name", sorted(CITIZEN_CASES))
def test_pooled_model_is_a_full_timm_citizen(name, caplog):
    """timm's optimizer factory (layer decay), data config, EMA and gradient checkpointing
    work on a PooledModel as on the timm model itself."""
    import timm
    from timm.data import resolve_data_config
    from timm.optim import create_optimizer_v2
    from timm.utils import ModelEmaV3

    kwargs = CITIZEN_CASES[name]
    pool = "gem" if name == "resnet18" else "ggem"
    torch.manual_seed(0)
    model = create_model(name, pool=pool, num_classes=4, **kwargs)
    backbone = timm.create_model(name, num_classes=4, **kwargs)
    assert model.head_hidden_size == model.num_features
    # data config: the backbone's, not timm's ImageNet fallback
    assert resolve_data_config(model=model) == resolve_data_config(model=backbone)
    # layer-wise lr decay: the same per-block lr scales as timm gives the bare backbone
    with caplog.at_level(logging.WARNING, logger="timm"):
        optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05,
                                        layer_decay=0.65)
    assert "Layer-wise lr decay has no effect" not in caplog.text
    scales = sorted({g["lr_scale"] for g in optimizer.param_groups})
    bare = create_optimizer_v2(backbone, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.65)
    assert scales == sorted({g["lr_scale"] for g in bare.param_groups}) and len(scales) > 2
    p_group = [g for g in optimizer.param_groups if any(q is model.pool.p for q in g["params"])]
    assert p_group[0]["weight_decay"] == 0.0 and p_group[0]["lr_scale"] == max(scales)
    assert "pool.p" in model.no_weight_decay()
    # poolwise's grouping as timm's param_group_fn: p alone, its own lr multiplier
    from functools import partial

    from timm.scheduler import create_scheduler_v2

    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, param_group_fn=partial(
        param_groups, lr=1e-3, weight_decay=0.05, p_lr_mult=10.0, layer_decay=0.65,
        with_lr=False))
    (p_group,) = [g for g in optimizer.param_groups if g["name"] == "pool_p"]
    assert p_group["params"] == [model.pool.p] and p_group["weight_decay"] == 0.0
    assert p_group["lr_scale"] == pytest.approx(10.0 * max(scales))
    # timm's scheduler gives every group the scheduled lr times its scale, once
    scheduler, _ = create_scheduler_v2(optimizer, num_epochs=10, step_on_epochs=False,
                                       updates_per_epoch=10)
    scheduler.step_update(num_updates=0)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(1e-3 * group["lr_scale"])
    # EMA of the whole model, pool included
    ema = ModelEmaV3(model, decay=0.5)
    with torch.no_grad():
        model.pool.p.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.module.pool.p, model.pool.p - 0.5)
    # gradient checkpointing changes memory, not values
    size = kwargs.get("img_size", 64)
    x = torch.randn(2, 3, size, size)
    model.train()
    torch.manual_seed(1)
    plain = torch.autograd.grad(model(x).sum(), model.pool.p)[0]
    model.set_grad_checkpointing(True)
    torch.manual_seed(1)
    checkpointed = torch.autograd.grad(model(x).sum(), model.pool.p)[0]
    torch.testing.assert_close(checkpointed, plain)


@pytest.mark.parametrize("name", list_pools())
def test_every_pool_heads_a_timm_vit_and_trains(name):
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
