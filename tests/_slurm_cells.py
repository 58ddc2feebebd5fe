"""Grid functions that SLURM array elements of the tests import (tests/ is on their
PYTHONPATH)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def scaled(shared: dict, value: int) -> dict:
    """``value * factor``; a negative value raises."""
    if value < 0:
        raise ValueError(f"cell value {value} is negative")
    import torch

    return {"value": value * shared["factor"], "threads": torch.get_num_threads()}


def attempts(shared: dict, name: str) -> dict:
    """Counts its runs in ``<folder>/<name>.attempts``; the first run saves some work (as a
    cell that finished an epoch: a requeue then goes further), writes ``<name>.started`` and
    waits (for a signal, a cancel or ``<name>.go``); later runs return at once."""
    from poolwise.runs.folder import mark_progress

    folder = Path(shared["folder"])
    marker = folder / f"{name}.attempts"
    n = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(n))
    if n == 1:
        mark_progress()
        (folder / f"{name}.started").write_text(os.environ.get("SLURM_JOB_ID", ""))
        deadline = time.monotonic() + 300
        while not (folder / f"{name}.go").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    return {"name": name, "attempts": n}
