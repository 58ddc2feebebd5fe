"""The trainer of :mod:`poolwise.vision.train.engine`: optimizer groups and their lr scales."""


import pytest
import torch
from _tiny_vit import TINY


def test_the_trainer_scales_each_group_once():
    from poolwise.vision.models import create_model
    from poolwise.vision.train.engine import StepConfig, Trainer

    model = create_model("vit_tiny_patch16_224", pool="ggem", num_classes=3, **TINY)
    trainer = Trainer(model, StepConfig(epochs=2, steps_per_epoch=5, lr=1e-3, p_lr_mult=10.0,
                                        layer_decay=0.5, warmup_epochs=0.0),
                      torch.device("cpu"))
    trainer.scheduler.step_update(num_updates=0)
    lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    head = max(v for k, v in lrs.items() if k != "pool_p")
    assert head == pytest.approx(1e-3) and lrs["pool_p"] == pytest.approx(1e-2)
    assert min(lrs.values()) == pytest.approx(1e-3 * 0.5 ** 2)  # depth 1: stem, block, head
