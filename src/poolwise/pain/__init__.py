"""L-SFAN pain-behaviour detection on EmoPain-style motion capture + sEMG windows."""

from poolwise.pain.models import LSFAN, BANet, RecurrentNet, create_model, list_models

__all__ = ["LSFAN", "BANet", "RecurrentNet", "create_model", "list_models"]
