"""Checks of a vision run's values before any work: each refused value is named with the field,
the value and what would be accepted, before the run folder is created or touched.

Types are exact (``True`` is not an epoch count, ``"28"`` is not an image size) and numbers
finite; ranges are those of the methods (probabilities in [0, 1], decays in (0, 1), ...).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

# timm's ViT architecture arguments that take positive whole numbers (img_size and patch_size
# also take an (height, width) pair) and the one that takes a positive number
_WHOLE = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "in_chans",
          "num_classes")
_PAIRS = ("img_size", "patch_size")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


class _Checker:
    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.problems: list[str] = []

    def fail(self, name: str, text: str) -> None:
        self.problems.append(f"{name} = {getattr(self.spec, name)!r}: {text}")

    def whole(self, name: str, low: int = 1) -> None:
        value = getattr(self.spec, name)
        if not _is_int(value) or value < low:
            self.fail(name, f"must be a whole number >= {low}")

    def number(self, name: str, low: float, high: float | None = None, *,
               open_low: bool = False, open_high: bool = False,
               optional: bool = False) -> None:
        value = getattr(self.spec, name)
        if value is None and optional:
            return
        ok = _is_number(value) and (value > low if open_low else value >= low)
        if ok and high is not None:
            ok = value < high if open_high else value <= high
        if not ok:
            span = f"{'>' if open_low else '>='} {low:g}"
            if high is not None:
                span += f" and {'<' if open_high else '<='} {high:g}"
            self.fail(name, f"must be a finite number {span}"
                      + (", or None (off)" if optional else ""))

    def choice(self, name: str, choices: Iterable[str], optional: bool = False) -> None:
        value = getattr(self.spec, name)
        choices = tuple(choices)
        if value is None and optional:
            return
        if value not in choices:
            self.fail(name, f"must be one of {', '.join(choices)}" +
                      (" or None" if optional else ""))

    def flag(self, name: str) -> None:
        if not isinstance(getattr(self.spec, name), bool):
            self.fail(name, "must be true or false")


def _model_kwargs(kwargs: Any) -> list[str]:
    if not isinstance(kwargs, dict):
        return [f"model_kwargs = {kwargs!r}: must be a table of timm's model arguments"]
    problems = []
    for key in _WHOLE:
        if key not in kwargs:
            continue
        value = kwargs[key]
        pair = key in _PAIRS and isinstance(value, (list, tuple)) and len(value) == 2
        values = list(value) if pair else [value]
        if not all(_is_int(v) and v >= 1 for v in values):
            problems.append(f"model_kwargs.{key} = {value!r}: must be a whole number >= 1"
                            + (" (or a [height, width] pair)" if key in _PAIRS else ""))
    if "mlp_ratio" in kwargs and not (_is_number(kwargs["mlp_ratio"])
                                      and kwargs["mlp_ratio"] > 0):
        problems.append(f"model_kwargs.mlp_ratio = {kwargs['mlp_ratio']!r}: must be a finite "
                        "number > 0")
    return problems


def check_run_spec(spec: Any) -> None:
    """Raises ValueError listing every value of ``spec`` (a
    :class:`~poolwise.vision.train.spec.RunSpec`) that no run can use."""
    from poolwise.pooling import list_pools
    from poolwise.runs.loop import AMP_DTYPES
    from poolwise.vision.models import NORM_PLACEMENTS
    from poolwise.vision.retrieval.losses import LOSSES

    c = _Checker(spec)
    if not isinstance(spec.model, str) or not spec.model:
        c.fail("model", "must be a timm model name")
    c.choice("pool", list_pools())
    if spec.groups is not None:
        c.whole("groups")
    c.choice("norm", NORM_PLACEMENTS, optional=True)
    c.problems += _model_kwargs(spec.model_kwargs)
    if not isinstance(spec.pool_kwargs, dict):
        c.fail("pool_kwargs", "must be a table of the pool's arguments")
    if not isinstance(spec.data, str) or not spec.data:
        c.fail("data", "must be 'embedded', 'fashion-mnist' or a folder")
    if spec.classes is not None and not (
            isinstance(spec.classes, list) and len(spec.classes) >= 2
            and all(_is_int(k) and k >= 0 for k in spec.classes)
            and len(set(spec.classes)) == len(spec.classes)):
        c.fail("classes", "must be two or more distinct class indices >= 0")
    for name in ("pretrained", "augment", "channels_last", "compile"):
        c.flag(name)
    if spec.checkpoint is not None and not isinstance(spec.checkpoint, str):
        c.fail("checkpoint", "must be a path")
    for name in ("epochs", "batch_size", "accum_steps", "m_per_class"):
        c.whole(name)
    if not _is_int(spec.seed):
        c.fail("seed", "must be a whole number")
    c.number("lr", 0.0, open_low=True)
    c.number("weight_decay", 0.0)
    c.number("layer_decay", 0.0, 1.0, open_low=True, optional=True)
    c.number("p_lr_mult", 0.0, open_low=True)
    c.number("proxy_lr_mult", 0.0, open_low=True)
    c.number("warmup_epochs", 0.0)
    c.number("warmup_lr", 0.0)
    c.number("min_lr", 0.0)
    c.number("clip_grad", 0.0, open_low=True, optional=True)
    c.number("drop_path", 0.0, 1.0, open_high=True)
    c.number("label_smoothing", 0.0, 1.0, open_high=True)
    c.number("mixup", 0.0)
    c.number("cutmix", 0.0)
    for name in ("mixup_prob", "hflip", "reprob"):
        c.number(name, 0.0, 1.0)
    c.number("ema_decay", 0.0, 1.0, open_low=True, open_high=True, optional=True)
    c.choice("amp", AMP_DTYPES)
    c.choice("loss", LOSSES)
    if not isinstance(spec.opt, str) or not isinstance(spec.sched, str):
        c.problems.append(f"opt = {spec.opt!r}, sched = {spec.sched!r}: must be timm's names")
    if spec.auto_augment is not None and not isinstance(spec.auto_augment, str):
        c.fail("auto_augment", "must be timm's RandAugment string or None")
    if c.problems:
        raise ValueError("the run's settings cannot be used (nothing was written):\n  "
                         + "\n  ".join(c.problems))
