"""L-SFAN pain-behaviour detection on EmoPain-style motion capture + sEMG windows.

The names below are imported on first use (PEP 562), so ``import poolwise.pain`` and the CLI's
parser stay light.
"""

from __future__ import annotations

from poolwise._lazy import lazy_exports

_EXPORTS = {
    "Detector": "poolwise.pain.deploy.detector",
    "LSFAN": "poolwise.pain.models",
    "BANet": "poolwise.pain.models",
    "RecurrentNet": "poolwise.pain.models",
    "create_model": "poolwise.pain.models",
    "list_models": "poolwise.pain.models",
    "Decision": "poolwise.pain.deploy.streaming",
    "StreamingDetector": "poolwise.pain.deploy.streaming",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)


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
