"""Where a run's per-epoch records go besides ``log.jsonl`` (which is always written).

- ``tensorboard``: event files in ``<run folder>/tensorboard/`` (torch's ``SummaryWriter``;
  needs the ``tensorboard`` package), watched live with ``tensorboard --logdir RUN``.
- ``mlflow``: one MLflow run per training (per LOSO fold), in the experiment
  ``MLFLOW_EXPERIMENT_NAME`` (default ``poolwise``) of the tracking server or store that
  ``MLFLOW_TRACKING_URI`` names, as every MLflow program reads it; tagged with the run folder.
- ``wandb``: one W&B run per training in the project ``WANDB_PROJECT`` (default ``poolwise``),
  grouped by the run folder's name, its local files in ``<run folder>/wandb/``; ``WANDB_MODE=
  offline`` keeps it on the machine (``wandb sync`` uploads it later).

Only numbers are logged (a list, such as the learned p per group, becomes one scalar per
entry); the step is the epoch. A sink whose package is missing, an MLflow store that cannot be
reached and W&B without credentials in online mode are refused by :func:`check_sinks` before
any work.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SINKS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # name: package


def check_sinks(names: Iterable[str]) -> tuple[str, ...]:
    """The names, checked: each is known, its package importable and, for MLflow and W&B,
    where the records would go reachable or allowed.

    Raises:
        ValueError: naming an unknown sink, the package to install or the setting to make.
    """
    names = tuple(dict.fromkeys(names))
    for name in names:
        if name not in SINKS:
            raise ValueError(f"log sink {name!r} is not one of {', '.join(SINKS)}")
        if importlib.util.find_spec(SINKS[name]) is None:
            raise ValueError(f"--log-to {name} needs the {SINKS[name]} package: "
                             f"pip install 'poolwise[{name}]'")
        if name == "mlflow":
            _mlflow_experiment()
        if name == "wandb":
            _check_wandb()
    return names


def _mlflow_experiment() -> str:
    """The id of the MLflow experiment the runs go to, created when missing."""
    import mlflow

    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "poolwise"
    client = mlflow.MlflowClient()
    try:
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(name)
        except mlflow.exceptions.MlflowException:  # another process created it meanwhile
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id
    except Exception as error:
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        raise ValueError(
            f"--log-to mlflow: the tracking store {mlflow.get_tracking_uri()!r} cannot be used "
            f"({type(error).__name__}: {first}); set MLFLOW_TRACKING_URI to your MLflow server "
            "or store") from None


def _check_wandb() -> None:
    mode = os.environ.get("WANDB_MODE", "online")
    if mode in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_API_KEY"):
        return
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="replace"):
        return
    raise ValueError("--log-to wandb: no W&B credentials (WANDB_API_KEY or `wandb login`); "
                     "log in, or set WANDB_MODE=offline to keep the runs on this machine "
                     "(`wandb sync` uploads them later)")


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


class _TensorBoard:
    def __init__(self, folder: Path, name: str | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard" / (name or "")))

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _MLflow:
    def __init__(self, folder: Path, name: str | None) -> None:
        import mlflow

        self.client = mlflow.MlflowClient()
        title = folder.name if name is None else f"{folder.name}/{name}"
        self.run_id = self.client.create_run(
            _mlflow_experiment(), run_name=title,
            tags={"poolwise.run_folder": str(folder.resolve()), "poolwise.item": name or ""},
        ).info.run_id

    def log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(key, value, now, step) for key, value in values.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class _WandB:
    def __init__(self, folder: Path, name: str | None) -> None:
        import wandb

        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "poolwise", dir=str(folder),
            group=folder.name, name=folder.name if name is None else f"{folder.name}/{name}",
            config={"run_folder": str(folder.resolve()), "item": name},
            reinit="create_new")

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


_WRITERS = {"tensorboard": _TensorBoard, "mlflow": _MLflow, "wandb": _WandB}


class Sinks:
    """The sinks of one run (or of one fold of a run: ``name``), opened on first use.

    Args:
        names: Checked sink names (:func:`check_sinks`).
        folder: The run folder.
        name: What this training is within the run folder when several share it (LOSO folds:
            the held-out subject): TensorBoard's subfolder, the MLflow and W&B run's name.
    """

    def __init__(self, names: Sequence[str], folder: str | Path, *,
                 name: str | None = None) -> None:
        self.names = tuple(names)
        self.folder = Path(folder)
        self.name = name
        self._open: dict[str, Any] = {}

    def _writer(self, sink: str) -> Any:
        if sink not in self._open:
            self._open[sink] = _WRITERS[sink](self.folder, self.name)
        return self._open[sink]

    def log(self, record: Mapping[str, Any], step: int) -> None:
        """Logs the numbers of ``record`` at ``step`` to every sink."""
        values = scalars(record)
        for sink in self.names:
            self._writer(sink).log(values, step)

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
