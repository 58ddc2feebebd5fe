"""L-SFAN pain-behaviour detection on EmoPain-style motion capture + sEMG windows.

The names below are imported on first use (PEP 562), so ``import poolwise.pain`` and the CLI's
parser stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Detector": "poolwise.pain.detector",
    "LSFAN": "poolwise.pain.models",
    "BANet": "poolwise.pain.models",
    "RecurrentNet": "poolwise.pain.models",
    "create_model": "poolwise.pain.models",
    "list_models": "poolwise.pain.models",
    "Decision": "poolwise.pain.streaming",
    "StreamingDetector": "poolwise.pain.streaming",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LSFAN",
    "BANet",
    "Decision",
    "Detector",
    "RecurrentNet",
    "StreamingDetector",
    "create_model",
    "list_models",
]
