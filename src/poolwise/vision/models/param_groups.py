"""Optimizer parameter groups for pooled timm models: timm's grouping, the pools' p apart."""

from __future__ import annotations

from torch import nn

# The default lr multiplier of the pools' exponents p, for every run type and `param_groups`:
# with Adam a step moves p by about lr, so at lr 1e-3 and p = 3 an unscaled p barely moves in a
# short run.
P_LR_MULT = 10.0


def param_groups(
    model: nn.Module, *, lr: float, weight_decay: float, p_lr_mult: float = P_LR_MULT,
    layer_decay: float | None = None, with_lr: bool = True,
) -> list[dict]:
    """Optimizer groups from timm's own grouping, with the pools' exponents p apart.

    timm's ``param_groups_weight_decay`` (or, with ``layer_decay``, ``param_groups_layer_decay``,
    which scales each block's lr by ``layer_decay ** (depth - block)`` through the model's
    ``group_matcher``) decides decay and lr scale; every parameter named ``p`` (the pools'
    exponents) is then moved to a group of its own, without decay, whose ``lr_scale`` is its
    layer's scale times ``p_lr_mult``. Each group has a ``name`` and, with ``with_lr``, its
    ``lr = lr * lr_scale``, so that any torch optimizer takes the groups as they are.

    timm's schedulers set every step's lr to the scheduled value times ``lr_scale``, starting
    from each group's initial lr; with them pass ``with_lr=False`` (else a group's scale would
    apply twice): ``create_optimizer_v2(model, "adamw", lr=lr, param_group_fn=partial(
    param_groups, lr=lr, weight_decay=wd, with_lr=False))``.
    """
    from timm.optim._param_groups import param_groups_layer_decay, param_groups_weight_decay

    no_decay = set(getattr(model, "no_weight_decay", set)())
    if layer_decay is None:
        groups = param_groups_weight_decay(model, weight_decay, no_decay)
        for group in groups:
            group["lr_scale"] = 1.0
    else:
        groups = param_groups_layer_decay(model, weight_decay, no_decay, layer_decay=layer_decay)
    names = {id(param): name for name, param in model.named_parameters()}
    layer = {scale: i for i, scale in enumerate(sorted({g["lr_scale"] for g in groups}))}
    out, exponents = [], {}
    for group in groups:
        kept = [q for q in group["params"] if not _is_exponent(names[id(q)])]
        for q in group["params"]:
            if _is_exponent(names[id(q)]):
                exponents.setdefault(group["lr_scale"], []).append(q)
        name = "decay" if group["weight_decay"] else "no_decay"
        if layer_decay is not None:
            name = f"layer_{layer[group['lr_scale']]}_{name}"
        if kept:
            out.append({**group, "params": kept, "name": name})
    for scale, params in exponents.items():
        out.append({"params": params, "weight_decay": 0.0, "lr_scale": scale * p_lr_mult,
                    "name": "pool_p"})
    if with_lr:
        for group in out:
            group["lr"] = lr * group["lr_scale"]
    return out


def _is_exponent(name: str) -> bool:
    return name == "p" or name.endswith(".p")
