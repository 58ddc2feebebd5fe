"""Reading checkpoints (safetensors or weights-only torch files) into a pooled timm model.

:func:`load_checkpoint` takes a poolwise checkpoint (``backbone.*`` / ``pool.*`` keys) or a
plain timm one, and says key by key what it did in a :class:`LoadReport`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from poolwise._io import read_safetensors


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
        return read_safetensors(path)
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


def load_checkpoint(model: nn.Module, path: str | Path, *, strict: bool = True) -> LoadReport:
    """Loads a poolwise checkpoint (``backbone.*``/``pool.*`` keys) or a plain timm one into a
    :class:`~poolwise.vision.models.pooled.PooledModel`.

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


def _classifier_named(model: nn.Module):
    head = model.get_classifier()
    for name, module in model.backbone.named_modules():
        if module is head:
            return [(f"{name}.{k}", v) for k, v in head.state_dict().items()]
    return []


