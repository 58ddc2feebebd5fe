"""timm models with a pool as their head (:mod:`.pooled`), their checkpoints (:mod:`.checkpoint`)
and optimizer groups (:mod:`.param_groups`)."""

from poolwise.vision.models.checkpoint import LoadReport, load_checkpoint, read_state_dict
from poolwise.vision.models.param_groups import P_LR_MULT, param_groups
from poolwise.vision.models.pooled import (
    NORM_PLACEMENTS,
    PooledModel,
    create_model,
    describe_model,
)

__all__ = ["NORM_PLACEMENTS", "P_LR_MULT", "LoadReport", "PooledModel", "create_model",
           "describe_model", "load_checkpoint", "param_groups", "read_state_dict"]
