"""Pain-behaviour models and the registry of their names.

The registry is the single source of model names. Each entry names the class that builds the
model (``module:Class``) and the keywords that make it that model; the class's module is
imported only when a model is built, so listing names (the CLI's parser, ``--help``) does not
load the CNN's kernels or any optional dependency.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from poolwise._lazy import lazy_exports

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: ``factory`` is ``"module:attribute"``, called with ``fixed``
    keywords and then the caller's; ``windowed`` models need the window length."""

    factory: str
    description: str
    fixed: dict[str, Any] = field(default_factory=dict)
    windowed: bool = False

    def load(self) -> Any:
        module, _, attribute = self.factory.partition(":")
        return getattr(importlib.import_module(module), attribute)


_LSFAN = "poolwise.pain.models.lsfan:LSFAN"
_RNN = "poolwise.pain.models.recurrent:RecurrentNet"

_MODELS: dict[str, ModelEntry] = {
    "lsfan": ModelEntry(
        _LSFAN, "L-SFAN as published: CNN, temporal avg pool, one encoder layer", windowed=True),
    "lsfan_ggem": ModelEntry(
        _LSFAN, "L-SFAN with a temporal GGeM (one learnable p per CNN channel)",
        {"pool": "ggem"}, windowed=True),
    "cnn_tap": ModelEntry(
        _LSFAN, "ablation 2D-CNN-TAP: no attention", {"attention": False}, windowed=True),
    "cnn_sap": ModelEntry(
        _LSFAN, "ablation 2D-CNN-SAP: pools the sensor axis, no attention",
        {"attention": False, "pool_axis": "sensor"}, windowed=True),
    "banet": ModelEntry(
        "poolwise.pain.models.recurrent:BANet",
        "BANet (Wang et al. 2019): per-segment LSTM, temporal + bodily attention"),
    "gru": ModelEntry(_RNN, "2-layer GRU over the 30 columns", {"cell": "gru"}),
    "lstm": ModelEntry(_RNN, "2-layer LSTM over the 30 columns", {"cell": "lstm"}),
}


def list_models() -> list[str]:
    return sorted(_MODELS)


def describe_models() -> dict[str, str]:
    return {name: _MODELS[name].description for name in list_models()}


def _entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise ValueError(f"unknown pain model {name!r}; known: {', '.join(list_models())}")
    return _MODELS[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Builds a fresh, newly initialised pain model by name."""
    entry = _entry(name)
    return entry.load()(**entry.fixed, **kwargs)


def model_input_kwargs(name: str, n_channels: int, window: int) -> dict:
    """The constructor arguments that fit a model to inputs ``(n, n_channels, window)``."""
    kwargs: dict[str, Any] = {"n_channels": n_channels}
    if _entry(name).windowed:
        kwargs["window"] = window
    return kwargs


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


_CLASSES = {
    "LSFAN": "poolwise.pain.models.lsfan",
    "BANet": "poolwise.pain.models.recurrent",
    "RecurrentNet": "poolwise.pain.models.recurrent",
    "map_reference_state_dict": "poolwise.pain.models.lsfan",
}
__getattr__ = lazy_exports(__name__, _CLASSES)  # the model classes, imported on first use


__all__ = [
    "LSFAN",
    "BANet",
    "ModelEntry",
    "RecurrentNet",
    "count_parameters",
    "create_model",
    "describe_models",
    "list_models",
    "map_reference_state_dict",
    "model_input_kwargs",
]
