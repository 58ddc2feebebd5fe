"""Pain-behaviour models and the registry of their names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from poolwise.pain.models.lsfan import LSFAN, map_reference_state_dict
from poolwise.pain.models.recurrent import BANet, RecurrentNet

_MODELS: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "lsfan": (LSFAN, "L-SFAN as published: CNN, temporal avg pool, one encoder layer"),
    "lsfan_ggem": (
        lambda **kw: LSFAN(pool="ggem", **kw),
        "L-SFAN with a temporal GGeM (one learnable p per CNN channel)",
    ),
    "cnn_tap": (lambda **kw: LSFAN(attention=False, **kw), "ablation 2D-CNN-TAP: no attention"),
    "cnn_sap": (
        lambda **kw: LSFAN(attention=False, pool_axis="sensor", **kw),
        "ablation 2D-CNN-SAP: pools the sensor axis, no attention",
    ),
    "banet": (BANet, "BANet (Wang et al. 2019): per-segment LSTM, temporal + bodily attention"),
    "gru": (lambda **kw: RecurrentNet(cell="gru", **kw), "2-layer GRU over the 30 columns"),
    "lstm": (lambda **kw: RecurrentNet(cell="lstm", **kw), "2-layer LSTM over the 30 columns"),
}


def list_models() -> list[str]:
    return sorted(_MODELS)


def describe_models() -> dict[str, str]:
    return {name: _MODELS[name][1] for name in list_models()}


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Builds a fresh, newly initialised pain model by name."""
    if name not in _MODELS:
        raise ValueError(f"unknown pain model {name!r}; known: {', '.join(list_models())}")
    return _MODELS[name][0](**kwargs)


# models built on the 2D CNN need the window length; the recurrent ones take any length
_WINDOWED = {"lsfan", "lsfan_ggem", "cnn_tap", "cnn_sap"}


def model_input_kwargs(name: str, n_channels: int, window: int) -> dict:
    """The constructor arguments that fit a model to inputs ``(n, n_channels, window)``."""
    if name not in _MODELS:
        raise ValueError(f"unknown pain model {name!r}; known: {', '.join(list_models())}")
    kwargs = {"n_channels": n_channels}
    if name in _WINDOWED:
        kwargs["window"] = window
    return kwargs


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "LSFAN",
    "BANet",
    "RecurrentNet",
    "count_parameters",
    "create_model",
    "describe_models",
    "list_models",
    "map_reference_state_dict",
    "model_input_kwargs",
]
