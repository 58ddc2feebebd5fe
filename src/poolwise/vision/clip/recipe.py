"""Run open_clip's own training recipe (``open_clip_train.main``) with a poolwise pool.

An existing open_clip command line keeps every argument; only the launcher changes::

    python -m open_clip_train.main --model ViT-B-32 --train-data ... (as before)
    poolwise vision open-clip-train --pool ggem -- --model ViT-B-32 --train-data ... (the same)

The recipe's model factory is wrapped for the duration of the call: the model it builds (with
any pretrained weights already loaded) gets :func:`~poolwise.vision.clip.towers.use_pool` before
the recipe moves on to resume, DDP, the optimizer and the schedule. Everything else, including
``torchrun`` launches, is open_clip's. Only the first model built is changed: with
``--distill-model`` the teacher keeps its own pooling.

What the recipe does with p, read from its source: its AdamW puts every parameter with fewer
than two dims into the no-weight-decay group, so p is never decayed; its scheduler then sets one
learning rate for every group, so a separate learning rate for p (``p_lr_mult`` in poolwise's own
engine) is not available inside the recipe. The exponents are saved in the recipe's checkpoints
as ``visual.poolwise_pool.p`` (open_clip ViT towers) or ``visual.trunk.pool.p`` (timm towers),
and ``--resume`` restores them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from poolwise.vision.clip.towers import use_pool


def run_open_clip_recipe(argv: Sequence[str], *, pool: str = "ggem", groups: int | None = None,
                         include_prefix_tokens: bool = False,
                         pool_kwargs: dict | None = None) -> None:
    """Runs ``open_clip_train.main.main(argv)`` with ``pool`` on the image tower.

    Raises:
        ImportError: naming the packages the recipe needs when they are missing.
    """
    try:
        import open_clip_train.main as recipe
    except ImportError as err:  # the recipe imports webdataset, braceexpand, pandas, fsspec
        raise ImportError(
            f"open_clip's training recipe could not be imported ({err}); install it with "
            "pip install 'poolwise[clip-train]'") from err

    original = recipe.create_model_and_transforms
    changed: list[object] = []

    def create_with_pool(*args, **kwargs):
        model, preprocess_train, preprocess_val = original(*args, **kwargs)
        if not changed:
            use_pool(model, pool, groups=groups, include_prefix_tokens=include_prefix_tokens,
                     **(pool_kwargs or {}))
            changed.append(model)
        return model, preprocess_train, preprocess_val

    recipe.create_model_and_transforms = create_with_pool
    # the recipe sets the level of every logger and adds handlers to the root logger
    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = {name: logging.getLogger(name).level for name in [*root.manager.loggerDict, ""]}
    try:
        recipe.main(list(argv))
    finally:
        recipe.create_model_and_transforms = original
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for name in root.manager.loggerDict:
            logging.getLogger(name).setLevel(levels.get(name, logging.NOTSET))
        root.setLevel(levels[""])
    if not changed:
        raise RuntimeError("open_clip's recipe stopped before it built a model (its log above "
                           "says why, e.g. an existing --name); nothing was trained")
