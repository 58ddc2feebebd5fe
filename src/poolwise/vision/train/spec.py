"""A classification run's settings: :class:`RunSpec` (saved as ``run.json``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from poolwise.vision.train import engine
from poolwise.vision.train.checks import check_run_spec


@dataclass
class RunSpec(engine.Optimisation):
    """Everything that defines a classification run (saved as run.json). The optimisation
    fields are :class:`~poolwise.vision.train.engine.Optimisation`'s.

    Model: ``model`` (a timm name), ``pool``, ``groups``, ``norm``, ``model_kwargs`` (timm's
    arguments: img_size, patch_size, ...), ``drop_path`` (timm's drop_path_rate),
    ``pretrained``, ``checkpoint``, ``pool_kwargs``. Data: ``data``, ``classes``, ``augment``,
    ``hflip``, ``auto_augment`` and ``reprob`` (ImageFolder data, timm's transforms). Steps:
    ``epochs``, ``batch_size`` (per process), ``accum_steps``, ``opt``, ``lr``, ``weight_decay``,
    ``layer_decay``, ``p_lr_mult``, ``sched``, ``warmup_epochs``, ``warmup_lr``, ``min_lr``,
    ``clip_grad``. Regularisation: ``label_smoothing``, ``mixup``, ``cutmix``, ``mixup_prob``,
    ``ema_decay``. Loss: ``loss`` (``cross_entropy``, or a metric-learning loss of
    :mod:`poolwise.vision.retrieval.losses` with ``m_per_class`` images per class in a batch and
    ``proxy_lr_mult`` for Proxy Anchor's proxies). Speed: ``amp`` (none, bf16, fp16),
    ``channels_last``, ``compile``.
    """

    model: str = "vit_tiny_patch16_224"
    pool: str = "ggem"
    groups: int | None = None
    norm: str | None = None
    model_kwargs: dict = field(default_factory=dict)
    drop_path: float = 0.0
    pretrained: bool = False  # timm's weights (needs the internet or timm's cache)
    checkpoint: str | None = None  # a local timm or poolwise checkpoint to start from
    pool_kwargs: dict = field(default_factory=dict)
    data: str = "embedded"
    classes: list[int] | None = None  # train/evaluate on these classes only (renumbered)
    augment: bool = True
    hflip: float = 0.5
    auto_augment: str | None = None
    reprob: float = 0.0
    batch_size: int = 128
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    loss: str = "cross_entropy"
    m_per_class: int = 4
    proxy_lr_mult: float = 100.0
    channels_last: bool = False
    compile: bool = False
    seed: int = 0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Raises ValueError naming every value no run can use
        (:func:`poolwise.vision.train.checks.check_run_spec`)."""
        check_run_spec(self)

    def step_config(self, steps_per_epoch: int) -> engine.StepConfig:
        """The optimisation half of the spec, with ``steps_per_epoch`` (checked)."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(engine.Optimisation)}
        return engine.StepConfig(steps_per_epoch=steps_per_epoch, **shared)
