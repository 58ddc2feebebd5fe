"""Pools from :mod:`poolwise.pooling` on timm models: models, image data, engines, metrics."""

from poolwise.vision.models import (
    LoadReport,
    PooledModel,
    create_model,
    load_checkpoint,
    param_groups,
)

__all__ = ["LoadReport", "PooledModel", "create_model", "load_checkpoint", "param_groups"]
