"""The one training engine of ``poolwise.vision``: run folders, the optimisation step, DDP.

Classification (:mod:`poolwise.vision.train`) and CLIP-style learning
(:mod:`poolwise.vision.clip.train`) both run through it; each supplies its batches and a loss.

- **Run folder.** ``run.json`` (the spec, written once the model is built; another spec in the
  folder is refused), ``model.json`` (the resolved model), ``checkpoint.pt`` after every epoch
  (model, optimizer, scheduler, gradient scaler, EMA weights, history; loadable with
  ``torch.load(..., weights_only=True)``), ``log.jsonl`` (one line per epoch), and at the end
  ``model.safetensors`` (plus ``model_ema.safetensors``) and ``result.json``, which marks a
  finished run. Every file is written atomically; rank 0 holds the folder's lock.
- **Step.** poolwise's one loop (:class:`poolwise.runs.loop.StepLoop`: gradient accumulation,
  autocast in bf16 or fp16 with a checkpointed ``GradScaler``, clipping, EMA updates) with
  timm's parts, none written here: the optimizer from ``create_optimizer_v2`` with poolwise's
  parameter groups (layer decay, p apart), the scheduler from ``create_scheduler_v2`` updated
  per optimizer step, ``ModelEmaV3``, ``dispatch_clip_grad``.
- **Resume.** Batches, augmentation and dropout are drawn from generators seeded by (seed,
  epoch), and every stateful part is checkpointed, so a resumed run ends with the same weights
  (EMA included) as an uninterrupted one.
- **DDP.** Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is created (NCCL on GPUs,
  gloo on CPUs), the model is wrapped in DistributedDataParallel and only rank 0 writes.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from poolwise import __version__
from poolwise._io import read_json, safetensors_bytes, write_bytes
from poolwise.runs import RunFolder
from poolwise.runs.folder import mark_progress
from poolwise.runs.loop import AMP_DTYPES, StepLoop
from poolwise.vision.models import P_LR_MULT, param_groups

# --- processes and devices -------------------------------------------------------------------


def distributed() -> tuple[int, int, bool]:
    """(rank, world size, whether this call created the process group)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    created = world > 1 and not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world, created) if world > 1 else (0, 1, False)


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def data_parallel(model: nn.Module, device: torch.device, world: int) -> nn.Module:
    """The model wrapped in DistributedDataParallel under torchrun, else the model itself."""
    if world == 1:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)


# --- the run folder --------------------------------------------------------------------------


def run_folder(run_dir: Path) -> RunFolder:
    """A training run's folder: settings ``run.json``, finished record ``result.json``."""
    return RunFolder(run_dir, what="run", records="result.json", item="run result")


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """While a run trains, rank 0 holds its folder (a second run on it refuses, see
    :meth:`poolwise.runs.RunFolder.hold`); other ranks hold nothing."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    with run_folder(run_dir).hold():
        yield


def open_run(run_dir: Path, spec: Any) -> tuple[int, int, bool, dict | None]:
    """Rank, world size, whether this call created the process group, and the finished result
    (``{}`` on ranks other than 0) when ``result.json`` is finished, else None. Rank 0 creates
    the folder, refuses a spec other than the one recorded there, and removes a
    ``result.json`` whose weights do not match it (the run then finishes again from its
    checkpoint)."""
    rank, world, created = distributed()
    folder = run_folder(run_dir)
    finished = None
    if rank == 0:
        folder.path.mkdir(parents=True, exist_ok=True)
        settings = run_settings(spec)
        _check_same_data(folder, spec.data, settings["data_fingerprint"])
        folder.check_settings(settings, ignore=("data",))
        finished, problem = folder.finished()
        if problem is not None:
            folder.record_path().unlink(missing_ok=True)
    if world > 1:
        dist.barrier()
    if not folder.record_path().exists():
        return rank, world, created, None
    if created:
        dist.destroy_process_group()
    return rank, world, created, finished if rank == 0 else {}


def _check_same_data(folder: RunFolder, data: str, now: dict) -> None:
    if not folder.settings_path.is_file():
        return
    saved = read_json(folder.settings_path, "the run settings")
    recorded = saved.get("data_fingerprint") if isinstance(saved, dict) else now
    if recorded is None:
        raise ValueError(f"{folder.path}: this run was started by a poolwise older than "
                         f"{__version__}, which did not record what its data held, so a resume "
                         "could not tell whether the data changed; finish it with that "
                         "version, or train again in another --out folder")
    if recorded == now:
        return

    def say(f: dict) -> str:
        return f"{f['files']} files, {f['bytes']:,} bytes, sha256 {f['sha256'][:12]}"

    raise ValueError(f"{folder.path}: this run was trained on other data than {data} holds now "
                     f"(recorded: {say(recorded)}; now: {say(now)}); restore the data it was "
                     "trained on, or use another --out folder")


def run_settings(spec: Any) -> dict:
    """What ``run.json`` records: the spec, and the fingerprint of its data's content
    (:mod:`poolwise.vision.data.fingerprint`); resuming compares the fingerprint, not the path by
    which the data was named."""
    from poolwise.vision.data.fingerprint import data_fingerprint

    return {**spec.to_json(), "data_fingerprint": data_fingerprint(spec.data)}


def record_spec(run_dir: Path, spec: Any) -> None:
    """Writes ``run.json`` once the run is known to be valid (its model built); rank 0 only."""
    folder = run_folder(run_dir)
    if int(os.environ.get("RANK", "0")) == 0 and not folder.settings_path.exists():
        folder.write_settings(run_settings(spec))


# --- optimisation ----------------------------------------------------------------------------


@dataclass
class Optimisation:
    """How parameters are updated, as a run's settings give it. Each field is declared here
    once: a run's spec (:class:`~poolwise.vision.train.spec.RunSpec`) extends this class, and
    :class:`StepConfig` adds what the data decides."""

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.05
    opt: str = "adamw"
    layer_decay: float | None = None
    p_lr_mult: float = P_LR_MULT
    sched: str = "cosine"
    warmup_epochs: float = 1.0
    warmup_lr: float = 0.0
    min_lr: float = 0.0
    accum_steps: int = 1
    clip_grad: float | None = None
    ema_decay: float | None = None
    amp: str = "none"


@dataclass
class StepConfig(Optimisation):
    """What a :class:`Trainer` runs: the optimisation and its optimizer steps per epoch (after
    accumulation), checked on construction."""

    steps_per_epoch: int = field(kw_only=True)

    def __post_init__(self) -> None:
        if self.accum_steps < 1:
            raise ValueError(f"accum_steps must be at least 1, got {self.accum_steps}")
        if self.amp not in AMP_DTYPES:
            raise ValueError(f"amp {self.amp!r} is not one of {tuple(AMP_DTYPES)}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ValueError(f"clip_grad must be > 0, got {self.clip_grad}")
        total = self.epochs * self.steps_per_epoch
        if self.warmup_lr == 0 and self.warmup_epochs > 0 and total <= 1:
            raise ValueError(
                f"the run has {total} optimiser step(s) ({self.epochs} epoch(s) of "
                f"{self.steps_per_epoch}), taken at the warm-up's starting lr 0: nothing would "
                "be learned; train more steps (more epochs or a smaller batch_size), or set "
                "warmup_epochs = 0 or warmup_lr > 0")


class Trainer(StepLoop):
    """The loop's parts from timm: optimizer (``create_optimizer_v2`` over poolwise's parameter
    groups), per-step scheduler (``create_scheduler_v2``), ``ModelEmaV3``; checkpointed
    together (:class:`poolwise.runs.loop.StepLoop`).

    ``criterion``: a loss with parameters of its own (Proxy Anchor's proxies), trained in an
    optimizer group of its own (no weight decay, ``criterion_lr_mult`` times the lr) and
    checkpointed with the rest.
    """

    def __init__(self, model: nn.Module, config: StepConfig, device: torch.device, *,
                 criterion: nn.Module | None = None, criterion_lr_mult: float = 1.0) -> None:
        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2
        from timm.utils import ModelEmaV3

        c = config
        groups = partial(param_groups, lr=c.lr, weight_decay=c.weight_decay,
                         p_lr_mult=c.p_lr_mult, layer_decay=c.layer_decay, with_lr=False)
        fused = {"fused": True} if device.type == "cuda" and c.opt == "adamw" else {}
        optimizer = create_optimizer_v2(model, c.opt, lr=c.lr, weight_decay=c.weight_decay,
                                        param_group_fn=groups, **fused)
        extra = [] if criterion is None else list(criterion.parameters())
        if extra:
            optimizer.add_param_group({
                # as for timm's groups: the scheduler sets lr = scheduled lr x lr_scale
                "params": extra, "lr": c.lr, "weight_decay": 0.0,
                "lr_scale": criterion_lr_mult})
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=c.sched, num_epochs=c.epochs, warmup_epochs=c.warmup_epochs,
            warmup_lr=c.warmup_lr, min_lr=c.min_lr, warmup_prefix=True, step_on_epochs=False,
            updates_per_epoch=c.steps_per_epoch)
        ema = (ModelEmaV3(model, decay=c.ema_decay, device=device)
               if c.ema_decay is not None else None)
        super().__init__(model, optimizer, device=device, scheduler=scheduler, ema=ema,
                         accum_steps=c.accum_steps, clip_grad=c.clip_grad, amp=c.amp)
        self.config, self.criterion = config, criterion

    def state_dict(self) -> dict:
        state = super().state_dict()
        updates = state.pop("updates")  # the key order of checkpoints written before
        state["criterion"] = (self.criterion.state_dict() if self.criterion is not None
                              else None)
        state["updates"] = updates
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.criterion is not None and state.get("criterion") is not None:
            self.criterion.load_state_dict(state["criterion"])


def resume(run_dir: Path, trainer: Trainer) -> tuple[list[dict], int]:
    """Loads ``checkpoint.pt`` into the trainer if there is one; (history, first epoch).
    ``log.jsonl`` is rewritten from the checkpoint's history, so a kill between the two writes
    of :func:`save_epoch` leaves no epoch out of the log."""
    path = run_dir / "checkpoint.pt"
    if not path.exists():
        return [], 0
    try:
        state = torch.load(path, map_location=trainer.device, weights_only=True)
        trainer.load_state_dict(state["trainer"])
        history, first = list(state["history"]), int(state["epoch"]) + 1
    except PermissionError:
        raise  # names the file; not a damaged one
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError,
            pickle.UnpicklingError) as error:
        raise ValueError(f"{path}: a damaged or foreign checkpoint ({type(error).__name__}: "
                         f"{str(error).strip().splitlines()[0][:200]}); delete it to train this "
                         "run from its first epoch") from None
    if int(os.environ.get("RANK", "0")) == 0:
        run_folder(run_dir).rewrite_log(history)
    return history, first


def save_epoch(run_dir: Path, trainer: Trainer, epoch: int, history: list[dict]) -> None:
    """The resumable state (``checkpoint.pt``) and ``log.jsonl``, both written atomically."""
    buffer = io.BytesIO()  # serialised first, so a full disk is an OSError naming the file
    torch.save({"trainer": trainer.state_dict(), "epoch": epoch, "history": history}, buffer)
    write_bytes(run_dir / "checkpoint.pt", buffer.getbuffer())
    mark_progress()  # a requeued job resumes after this epoch
    run_folder(run_dir).rewrite_log(history)


def save_final(run_dir: Path, trainer: Trainer, result: dict) -> dict:
    """``model.safetensors`` (and ``model_ema.safetensors``) then ``result.json``, which is
    written last: it marks a finished run and records the weights' sha256 (``weights``,
    ``weights_ema``). Returns the result as written."""
    files = {"weights": _save_weights(run_dir / "model.safetensors", trainer.model)}
    if trainer.ema is not None:
        files["weights_ema"] = _save_weights(run_dir / "model_ema.safetensors",
                                             trainer.ema.module)
    return run_folder(run_dir).finish("", result, files)


def _save_weights(path: Path, model: nn.Module) -> tuple[Path, str]:
    data = safetensors_bytes(model.state_dict())
    write_bytes(path, data)
    return path, hashlib.sha256(data).hexdigest()
