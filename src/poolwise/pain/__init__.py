"""L-SFAN pain-behaviour detection on EmoPain-style motion capture + sEMG windows."""

from poolwise.pain.detector import Detector
from poolwise.pain.models import LSFAN, BANet, RecurrentNet, create_model, list_models
from poolwise.pain.streaming import Decision, StreamingDetector

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
