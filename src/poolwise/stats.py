"""Summary statistics shared by every report (pain LOSO reports, vision pool comparisons).

Undefined values (``None``: a metric that a subject's labels or a seed's run do not define) are
counted, never averaged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["summarise"]


def summarise(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation (ddof=1) and count of the defined values, and how many
    were undefined. ``std`` is None below two defined values, ``mean`` None below one."""
    defined = np.array([v for v in values if v is not None], dtype=np.float64)
    return {
        "mean": float(defined.mean()) if len(defined) else None,
        "std": float(defined.std(ddof=1)) if len(defined) > 1 else None,
        "n": len(defined),
        "undefined": len(values) - len(defined),
    }
