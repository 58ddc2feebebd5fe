"""Put a poolwise pool on an open_clip image tower, without forking open_clip.

Two kinds of tower are handled:

- open_clip's own ``VisionTransformer`` (``ViT-B-32``, ...): the tower's ``_global_pool`` is
  replaced, on that instance, by the chosen pool over the patch tokens (the CLS token is a
  prefix token, excluded by default); the pool is registered as ``visual.poolwise_pool`` so its
  p is a parameter (``visual.poolwise_pool.p``) and lands in checkpoints. ``final_ln_after_pool``
  keeps its open_clip meaning (LayerNorm before or after pooling).
- a timm tower (``TimmModel``, configs with ``timm_model_name``): its trunk is wrapped in
  :class:`~poolwise.vision.models.PooledModel`.

``poolwise.vision.param_groups`` then gives the exponents their own optimizer group.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from poolwise.pooling import create_pool, pool_info
from poolwise.vision.models import PooledModel


def _vit_global_pool(self, x: Tensor) -> tuple[Tensor, Tensor]:
    return self.poolwise_pool(x), x[:, 1:]


def use_pool(model: nn.Module, pool: str, *, groups: int | None = None,
             include_prefix_tokens: bool = False, **pool_kwargs: Any) -> nn.Module:
    """Replaces the pooling of ``model.visual`` (an open_clip CLIP) in place; returns model.

    ``groups=None`` means the tower's number of attention heads.
    """
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer

    visual = model.visual
    if isinstance(visual, VisionTransformer):
        if visual.attn_pool is not None:
            raise ValueError("this tower pools with attention (CoCa); use a plain ViT tower")
        width = visual.conv1.out_channels
        heads = visual.transformer.resblocks[-1].attn.num_heads
        if groups is None and "groups" in pool_info(pool).needs:
            groups = heads
        visual.poolwise_pool = create_pool(
            pool, num_channels=width, groups=groups, channel_dim=-1,
            num_prefix_tokens=0 if include_prefix_tokens else 1, **pool_kwargs,
        ).to(visual.conv1.weight.device)
        visual._global_pool = types.MethodType(_vit_global_pool, visual)
        visual.poolwise_name, visual.poolwise_groups = pool, groups
        return model
    if isinstance(visual, TimmModel):
        visual.trunk = PooledModel(visual.trunk, pool, groups=groups,
                                   include_prefix_tokens=include_prefix_tokens,
                                   pool_kwargs=pool_kwargs)
        visual.trunk.to(next(visual.trunk.backbone.parameters()).device)
        visual.poolwise_name, visual.poolwise_groups = pool, visual.trunk.groups
        return model
    raise ValueError(f"unsupported image tower {type(visual).__name__}: expected open_clip's "
                     "VisionTransformer or TimmModel")


def pool_of(model: nn.Module) -> nn.Module:
    """The poolwise pool module of a CLIP model made by :func:`use_pool`."""
    visual = model.visual
    if hasattr(visual, "poolwise_pool"):
        return visual.poolwise_pool
    if isinstance(getattr(visual, "trunk", None), PooledModel):
        return visual.trunk.pool
    raise ValueError("the model's image tower has no poolwise pool")


def create_clip(name: str | None = None, *, pool: str = "ggem", groups: int | None = None,
                pretrained: str | None = None, config: dict | None = None,
                pool_kwargs: dict | None = None,
                **open_clip_kwargs: Any) -> tuple[nn.Module, Callable]:
    """An open_clip model with ``pool`` on its image tower, plus its tokenizer.

    Either ``name`` (an open_clip model name; ``pretrained`` as open_clip takes it) or
    ``config`` (a model config dict: ``embed_dim``, ``vision_cfg``, ``text_cfg``).
    """
    import open_clip

    if (name is None) == (config is None):
        raise ValueError("give exactly one of name (an open_clip model) or config (a dict)")
    if config is not None:
        model = open_clip.CLIP(**config, **open_clip_kwargs)
        tokenizer = open_clip.SimpleTokenizer(
            context_length=config.get("text_cfg", {}).get("context_length", 77))
    else:
        model = open_clip.create_model(name, pretrained=pretrained, **open_clip_kwargs)
        tokenizer = open_clip.get_tokenizer(name)
    return use_pool(model, pool, groups=groups, **(pool_kwargs or {})), tokenizer
