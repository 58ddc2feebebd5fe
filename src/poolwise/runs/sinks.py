"""Where a run's per-epoch records go besides ``log.jsonl`` (which is always written).

- ``tensorboard``: event files in ``<run folder>/tensorboard/`` (torch's ``SummaryWriter``;
  needs the ``tensorboard`` package), watched live with ``tensorboard --logdir RUN``.

Only numbers are logged (a list, such as the learned p per group, becomes one scalar per
entry); the step is the epoch. A sink whose package is missing is refused by
:func:`check_sinks` before any work.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SINKS = {"tensorboard": "tensorboard"}  # sink name: the package it needs


def check_sinks(names: Iterable[str]) -> tuple[str, ...]:
    """The names, checked: each is known and its package importable.

    Raises:
        ValueError: naming an unknown sink or the package to install.
    """
    names = tuple(dict.fromkeys(names))
    for name in names:
        if name not in SINKS:
            raise ValueError(f"log sink {name!r} is not one of {', '.join(SINKS)}")
        if importlib.util.find_spec(SINKS[name]) is None:
            raise ValueError(f"--log-to {name} needs the {SINKS[name]} package: "
                             f"pip install 'poolwise[{name}]'")
    return names


def scalars(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a record, nested keys joined by ``/`` and list entries numbered
    (``p/0``, ``p/1``, ...); booleans, strings and None are left out."""
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        if isinstance(value, Mapping):
            out.update(scalars(value, name + "/"))
        elif isinstance(value, (list, tuple)):
            out.update(scalars({str(i): v for i, v in enumerate(value)}, name + "/"))
        elif isinstance(value, (int, float)) and math.isfinite(value):
            out[name] = float(value)
    return out


class Sinks:
    """The sinks of one run (or of one fold of a run: ``name``), opened on first use.

    Args:
        names: Checked sink names (:func:`check_sinks`).
        folder: The run folder.
        name: TensorBoard's subfolder when several trainings share one run folder (LOSO
            folds: the held-out subject).
    """

    def __init__(self, names: Sequence[str], folder: str | Path, *,
                 name: str | None = None) -> None:
        self.names = tuple(names)
        self.folder = Path(folder)
        self.name = name
        self._open: dict[str, Any] = {}

    def _writer(self, sink: str) -> Any:
        if sink not in self._open:
            from torch.utils.tensorboard import SummaryWriter

            logdir = self.folder / "tensorboard" / (self.name or "")
            self._open[sink] = SummaryWriter(log_dir=str(logdir))
        return self._open[sink]

    def log(self, record: Mapping[str, Any], step: int) -> None:
        """Logs the numbers of ``record`` at ``step`` to every sink."""
        values = scalars(record)
        for sink in self.names:
            writer = self._writer(sink)
            for key, value in values.items():
                writer.add_scalar(key, value, step)
            writer.flush()

    def close(self) -> None:
        for writer in self._open.values():
            writer.close()
        self._open.clear()

    def __enter__(self) -> Sinks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def epoch_sinks(log_to: Iterable[str], folder: str | Path,
                on_epoch: Callable[[dict], None] | None = None, *,
                name: str | None = None) -> Iterator[Callable[[dict], None] | None]:
    """An ``on_epoch`` callback that also logs each epoch's record (its ``"epoch"`` is the
    step) to the sinks ``log_to``, closed when the block ends; ``on_epoch`` itself when there
    are no sinks."""
    names = check_sinks(log_to)
    if not names:
        yield on_epoch
        return
    sinks = Sinks(names, folder, name=name)

    def done(record: dict) -> None:
        sinks.log(record, int(record["epoch"]))
        if on_epoch is not None:
            on_epoch(record)

    try:
        yield done
    finally:
        sinks.close()
