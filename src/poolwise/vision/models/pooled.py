"""timm models with a pool from :mod:`poolwise.pooling` as their head.

``create_model(name, pool="ggem")`` builds the timm model unchanged (``timm.create_model``) and
wraps it in :class:`PooledModel`, which keeps timm's head contract: ``forward_features``,
``forward_head(x, pre_logits=False)``, ``reset_classifier``, ``get_classifier``,
``num_features``, ``num_classes``, ``num_prefix_tokens``. The backbone's own modules and
state-dict keys stay timm's (under ``backbone.``); the pool adds ``pool.*`` (e.g. ``pool.p``).

Where the final LayerNorm sits is the ``norm`` option:

- ``"tokens"``: the final norm is applied to every token, then the tokens are pooled. This is
  what timm's ViT, DeiT, DeiT-III, EVA-02 (CLS configs) and DINOv2 do.
- ``"pooled"``: the tokens are pooled first and the same LayerNorm (same parameters) is applied
  to the pooled vector, as timm does with ``fc_norm`` for average pooling (BEiT, MAE).
- ``None`` (default): the placement the timm model was built with, so pretrained weights see
  what they were trained with.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from poolwise.pooling import create_pool, pool_info
from poolwise.pooling.modules import learned_exponents
from poolwise.vision.models.checkpoint import load_checkpoint

NORM_PLACEMENTS = ("tokens", "pooled")


def _is_identity(module: nn.Module | None) -> bool:
    return module is None or isinstance(module, nn.Identity)


def _num_heads(backbone: nn.Module) -> int | None:
    blocks = getattr(backbone, "blocks", None)
    if blocks is None or len(blocks) == 0:
        return None
    attn = getattr(blocks[-1], "attn", None)
    return getattr(attn, "num_heads", None)


class PooledModel(nn.Module):
    """A timm backbone whose global pooling is a registered poolwise pool.

    Args:
        backbone: A timm model (ViT family: tokens ``(B, N, C)``; CNN: maps ``(B, C, H, W)``).
        pool: A name from :func:`poolwise.pooling.list_pools`.
        groups: Channel groups for ``ggem``; ``None`` means the backbone's number of heads.
        norm: Final-norm placement, ``"tokens"``, ``"pooled"`` or ``None`` (the backbone's own).
        include_prefix_tokens: Pool over CLS/register tokens too (default: excluded).
        pool_kwargs: Extra arguments of the pool (``p``, ``negative``, ``layout``, ...).
    """

    def __init__(
        self,
        backbone: nn.Module,
        pool: str = "ggem",
        *,
        groups: int | None = None,
        norm: str | None = None,
        include_prefix_tokens: bool = False,
        pool_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        classifier = backbone.get_classifier()
        if isinstance(classifier, tuple):
            raise ValueError(
                f"{type(backbone).__name__} has two classifier heads (a distilled model); "
                "use the non-distilled variant"
            )
        self.is_vit = hasattr(backbone, "num_prefix_tokens") and hasattr(backbone, "blocks")
        self.num_features = backbone.num_features
        self.num_prefix_tokens = getattr(backbone, "num_prefix_tokens", 0)
        self.num_heads = _num_heads(backbone)
        info = pool_info(pool)
        if groups is None and "groups" in info.needs:
            if self.num_heads is None:
                raise ValueError(
                    f"pool {pool!r} on {type(backbone).__name__} needs groups=G: the model has no "
                    "attention heads to take the default from"
                )
            groups = self.num_heads
        self.groups = groups

        if self.is_vit:
            if getattr(backbone, "attn_pool", None) is not None:
                backbone.attn_pool = None  # timm's 'map' head, replaced by our pool
            native = "tokens" if _is_identity(getattr(backbone, "fc_norm", None)) else "pooled"
            if norm is None:
                norm = native
            if norm not in NORM_PLACEMENTS:
                raise ValueError(f"norm={norm!r} is not one of {NORM_PLACEMENTS} or None")
            if norm != native:
                backbone.norm, backbone.fc_norm = backbone.fc_norm, backbone.norm
            self.native_norm = native
        else:
            if norm is not None:
                raise ValueError("norm placement applies to ViT-family models only")
            self.native_norm = None
        self.norm = norm
        self.backbone = backbone
        self.pool_name = pool
        prefix = 0 if include_prefix_tokens or not self.is_vit else self.num_prefix_tokens
        self.pool = create_pool(
            pool,
            num_channels=self.num_features,
            groups=groups,
            channel_dim=-1 if self.is_vit else 1,
            num_prefix_tokens=prefix,
            **(pool_kwargs or {}),
        )
        if info.cls_token and not self.is_vit:
            raise ValueError(f"pool {pool!r} needs a model with a CLS token (ViT family)")
        self.head_drop = getattr(backbone, "head_drop", None) or nn.Dropout(
            float(getattr(backbone, "drop_rate", 0.0))
        )

    @property
    def num_classes(self) -> int:
        head = self.get_classifier()
        return head.out_features if isinstance(head, nn.Linear) else 0

    def get_classifier(self) -> nn.Module:
        return self.backbone.get_classifier()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New classifier for ``num_classes`` (0: none). ``global_pool`` is not accepted here:
        the pool is chosen by name at creation (``create_model(..., pool=...)``)."""
        if global_pool is not None:
            raise ValueError("the pool is fixed at creation: create_model(name, pool=...)")
        self.backbone.reset_classifier(num_classes)
        if self.is_vit and getattr(self.backbone, "attn_pool", None) is not None:
            self.backbone.attn_pool = None

    def forward_features(self, x: Tensor) -> Tensor:
        return self.backbone.forward_features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head_from_pooled(self.pool(x), pre_logits)

    def head_from_pooled(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """The head after the pool: the final norm when it sits after pooling, dropout, and
        (unless ``pre_logits``) the classifier."""
        if self.is_vit:
            x = self.backbone.fc_norm(x)
        x = self.head_drop(x)
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    # --- the rest of timm's model contract: optimizer factory, data config, EMA, checkpointing

    @property
    def pretrained_cfg(self) -> dict:
        """The backbone's (mean, std, interpolation, crop_pct, input_size ...), so that
        ``timm.data.resolve_data_config(model=...)`` sees what the backbone was trained with."""
        return self.backbone.pretrained_cfg

    @property
    def default_cfg(self) -> dict:
        return self.pretrained_cfg

    @property
    def head_hidden_size(self) -> int:
        """Width of the pre-logits features (``forward_head(..., pre_logits=True)``)."""
        return self.num_features

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """The backbone's layer groups (stem, blocks, ...) over this model's parameter names,
        for timm's layer-wise lr decay; the pool falls in the last group, with the head."""
        return {group: _prefixed(spec, "backbone.")
                for group, spec in self.backbone.group_matcher(coarse=coarse).items()}

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """The backbone's no-decay names (position embeddings, CLS/register tokens, ...) and
        every parameter of the pool (its exponents p)."""
        own = getattr(self.backbone, "no_weight_decay", set)()
        return {f"backbone.{name}" for name in own} | {
            f"pool.{name}" for name, _ in self.pool.named_parameters()}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)

    def p_values(self) -> list[float] | None:
        """The pool's effective exponents (None for pools without p)."""
        p = learned_exponents(self.pool)
        return None if p is None else p.detach().cpu().tolist()


def _prefixed(spec, prefix: str):
    """A timm group-matcher spec (a regex, or a list of ``(regex, ordinal)``) with every regex
    anchored after ``prefix``; timm matches from the start of the name (``re.match``)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        return f"^{re.escape(prefix)}(?:{spec.removeprefix('^')})"
    return [(_prefixed(regex, prefix), ordinal) for regex, ordinal in spec]


def create_model(
    name: str,
    *,
    pool: str = "ggem",
    groups: int | None = None,
    pretrained: bool = False,
    checkpoint: str | Path | None = None,
    norm: str | None = None,
    include_prefix_tokens: bool = False,
    pool_kwargs: dict | None = None,
    **timm_kwargs: Any,
) -> PooledModel:
    """A timm model (ViT family or CNN) with ``pool`` as its head.

    ``pretrained=True`` loads timm's weights (needs the internet or timm's cache);
    ``checkpoint`` loads a local file with :func:`load_checkpoint` and keeps the report at
    ``model.load_report``. Other keywords go to ``timm.create_model`` (``num_classes``,
    ``img_size``, ``in_chans``, ``embed_dim``, ...); ``global_pool`` is refused: use ``pool``.
    """
    import timm

    if "global_pool" in timm_kwargs:
        raise ValueError("pass pool=<name> instead of timm's global_pool")
    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r} (see timm.list_models())")
    try:
        backbone = timm.create_model(name, pretrained=pretrained, **timm_kwargs)
    except TypeError as error:
        if "unexpected keyword argument" not in str(error):
            raise
        known = sorted(k for k in timm_kwargs if f"'{k}'" in str(error))
        raise ValueError(f"timm's {name} takes no argument {', '.join(known) or str(error)} "
                         "(from a recipe's [model_kwargs] or the model_kwargs given); "
                         "see the model's constructor in timm") from None
    _check_patch_grid(name, backbone)
    model = PooledModel(
        backbone, pool, groups=groups, norm=norm, include_prefix_tokens=include_prefix_tokens,
        pool_kwargs=pool_kwargs,
    )
    model.model_name = name
    model.load_report = None
    if checkpoint is not None:
        model.load_report = load_checkpoint(model, checkpoint)
    return model


def _check_patch_grid(name: str, backbone: nn.Module) -> None:
    """A patch size that does not divide the image size would silently drop the last pixels of
    every row and column (timm's patch embedding is a strided convolution)."""
    embed = getattr(backbone, "patch_embed", None)
    if embed is None or getattr(embed, "dynamic_img_pad", False):
        return
    image, patch = getattr(embed, "img_size", None), getattr(embed, "patch_size", None)
    if image is None or patch is None:
        return
    if any(i % q for i, q in zip(image, patch, strict=True)):
        raise ValueError(
            f"{name}: patch size {tuple(patch)} does not divide the image size {tuple(image)}; "
            "the remainder of every image would be ignored: pick a patch size that divides it "
            "(--patch-size), another --img-size, or --preset tiny28 for 28x28 images")


def describe_model(model: PooledModel) -> dict:
    """The resolved model, as a run prints and stores it (``model.json``)."""
    embed = getattr(model.backbone, "patch_embed", None)
    grid = getattr(embed, "grid_size", None)
    return {
        "name": getattr(model, "model_name", type(model.backbone).__name__),
        "parameters": sum(p.numel() for p in model.parameters()),
        "num_features": model.num_features,
        "patch_size": list(embed.patch_size) if embed is not None else None,
        "patch_grid": list(grid) if grid is not None else None,
        "prefix_tokens": model.num_prefix_tokens if model.is_vit else 0,
        "heads": model.num_heads,
        "pool": model.pool_name,
        "groups": model.groups,
        "norm": model.norm,
        "classes": model.num_classes,
    }

