"""Renamed public names: the old one keeps working for a while and says what to use instead."""

from __future__ import annotations

import warnings
from typing import Any


def renamed_keyword(where: str, old: str, new: str, old_value: Any, new_value: Any,
                    default: Any) -> Any:
    """The value of keyword ``new`` of ``where``, given as ``old`` by older code.

    ``old_value`` is None when the caller did not pass ``old``; passing both (with ``new``
    away from ``default``) is refused, since one of the two would be dropped silently.
    """
    if old_value is None:
        return new_value
    warnings.warn(f"{where}: {old}= is renamed {new}=; pass {new}={old_value!r}",
                  DeprecationWarning, stacklevel=3)
    if new_value != default and new_value != old_value:
        raise ValueError(f"{where}: got {old}={old_value!r} and {new}={new_value!r}; "
                         f"pass {new}= only")
    return old_value
