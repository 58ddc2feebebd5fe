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

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from poolwise.pooling import create_pool
from poolwise.pooling.modules import GGeM

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
        if groups is None and pool == "ggem":
            if self.num_heads is None:
                raise ValueError(
                    f"pool 'ggem' on {type(backbone).__name__} needs groups=G: the model has no "
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
        if pool == "token" and not self.is_vit:
            raise ValueError("pool 'token' needs a model with a CLS token (ViT family)")
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

    def p_values(self) -> list[float] | None:
        """The pool's effective exponents (None for pools without p)."""
        if isinstance(self.pool, GGeM):
            return self.pool.effective_p().detach().cpu().tolist()
        return None


@dataclass
class LoadReport:
    """What loading a checkpoint into a :class:`PooledModel` did, key by key."""

    path: str
    loaded: int = 0
    new: list[str] = field(default_factory=list)  # in the model, not in the file (e.g. pool.p)
    skipped_shape: list[str] = field(default_factory=list)  # classifier of another size
    unexpected: list[str] = field(default_factory=list)  # in the file, not used

    def lines(self) -> list[str]:
        out = [f"loaded {self.loaded} tensors from {self.path}"]
        if self.new:
            out.append(f"not in the checkpoint, kept at initial values: {', '.join(self.new)}")
        if self.skipped_shape:
            out.append(f"shape differs, kept freshly initialised: {', '.join(self.skipped_shape)}")
        if self.unexpected:
            out.append(f"in the checkpoint but unused: {', '.join(self.unexpected)}")
        return out


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file or a ``torch.save`` file (``weights_only=True``;
    a nested ``state_dict``/``model``/``state_dict_ema`` entry is unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: not a weights-only torch checkpoint ({error})") from error
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a dict of tensors (a state dict)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_checkpoint(model: PooledModel, path: str | Path, *, strict: bool = True) -> LoadReport:
    """Loads a poolwise checkpoint (``backbone.*``/``pool.*`` keys) or a plain timm one.

    A plain timm file fills the backbone; the final norm's keys follow the model's ``norm``
    placement. A classifier of another size is skipped (fine-tuning); the pool's parameters,
    when absent, keep their initial values. Both are listed in the returned report.

    Raises:
        ValueError: backbone tensors missing from the file, or (``strict``) tensors in the file
            that the model does not use; the message lists them.
    """
    state = read_state_dict(path)
    if not any(k.startswith(("backbone.", "pool.")) for k in state):
        swap = model.is_vit and model.norm != model.native_norm
        renamed = {}
        for key, value in state.items():
            if swap and key.split(".")[0] in ("norm", "fc_norm"):
                head, rest = key.split(".", 1)
                key = ("fc_norm" if head == "norm" else "norm") + "." + rest
            renamed["backbone." + key] = value
        state = renamed
    own = model.state_dict()
    report = LoadReport(path=str(path))
    classifier_keys = {f"backbone.{k}" for k, _ in _classifier_named(model)}
    usable = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            if key in classifier_keys:
                report.skipped_shape.append(key)
            else:
                raise ValueError(
                    f"{path}: {key} has shape {tuple(value.shape)}, the model expects "
                    f"{tuple(own[key].shape)}"
                )
        else:
            usable[key] = value
    missing = [k for k in own if k not in usable and k not in report.skipped_shape]
    report.new = [k for k in missing if k.startswith("pool.") or k in classifier_keys]
    absent = [k for k in missing if k not in report.new]
    if absent:
        raise ValueError(f"{path}: missing {len(absent)} backbone tensors: {', '.join(absent[:8])}")
    if strict and report.unexpected:
        raise ValueError(
            f"{path}: tensors the model does not use: {', '.join(report.unexpected[:8])} "
            "(pass strict=False to ignore them; they are listed in the report)"
        )
    model.load_state_dict(usable, strict=False)
    report.loaded = len(usable)
    return report


def _classifier_named(model: PooledModel):
    head = model.get_classifier()
    for name, module in model.backbone.named_modules():
        if module is head:
            return [(f"{name}.{k}", v) for k, v in head.state_dict().items()]
    return []


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
    **timm_kwargs,
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
    backbone = timm.create_model(name, pretrained=pretrained, **timm_kwargs)
    model = PooledModel(
        backbone, pool, groups=groups, norm=norm, include_prefix_tokens=include_prefix_tokens,
        pool_kwargs=pool_kwargs,
    )
    model.model_name = name
    model.load_report = None
    if checkpoint is not None:
        model.load_report = load_checkpoint(model, checkpoint)
    return model


def param_groups(
    model: nn.Module, *, lr: float, weight_decay: float, p_lr_mult: float = 1.0
) -> list[dict]:
    """Optimizer groups: weights with decay; biases, norms, embeddings without; the pools'
    exponents p in their own group without decay and with ``lr * p_lr_mult``."""
    decay, no_decay, exponents = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name == "p" or name.endswith(".p"):
            exponents.append(param)
        elif param.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "reg_token")):
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "lr": lr, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "lr": lr, "name": "no_decay"},
        {"params": exponents, "weight_decay": 0.0, "lr": lr * p_lr_mult, "name": "pool_p"},
    ]
    return [g for g in groups if g["params"]]
