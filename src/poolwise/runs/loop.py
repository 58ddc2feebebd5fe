"""The one optimisation loop of poolwise, for every model it trains.

The vision engine (:class:`poolwise.vision.train.engine.Trainer`: timm's optimizer, scheduler
and EMA), the pain models (:func:`poolwise.pain.train.fit`: Adam, model selection, early
stopping) and the probe heads (:func:`poolwise.vision.probe.probe_cell`: AdamW, cosine) each
build their parts and hand them to :class:`StepLoop`; each supplies its batches and a loss
``loss_fn(net, batch) -> (mean loss, batch size)``, and evaluates the way its task needs.

- :class:`StepLoop` runs epochs of optimizer steps: gradient accumulation (each batch's loss
  divided by the number of batches in its step; DDP's all-reduce only on a step's last batch),
  autocast in bf16 or fp16 with a ``GradScaler``, the scheduler's per-step ``step_update``
  (timm's interface), gradient clipping (timm's ``dispatch_clip_grad``) and an EMA's update
  after every step. Its ``state_dict`` holds every stateful part, so a run that checkpoints it
  after an epoch resumes to the same weights as an uninterrupted one.
- :class:`KeepBest` is model selection on a held-out set: it keeps the state of the epoch with
  the best score and says when ``patience`` epochs have passed without improvement.

Without accumulation, AMP, scheduler, clipping or EMA a step is exactly ``zero_grad``,
``backward``, ``step`` (a disabled ``GradScaler`` passes through), so a plain loop written by
hand gives the same bits.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Autocast in the run's AMP dtype (``"none"``: full precision)."""
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp {amp!r} is not one of {tuple(AMP_DTYPES)}")
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class StepLoop:
    """A model's optimizer and what steps with it, checkpointed together.

    ``scheduler``: anything with timm's ``step_update(num_updates=)`` and ``state_dict``;
    ``ema``: anything with ``update(model, step=)`` and a ``module``. ``updates`` counts the
    optimizer steps taken so far (the scheduler's position).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                 device: torch.device | None = None, scheduler: Any = None,
                 ema: Any = None, accum_steps: int = 1, clip_grad: float | None = None,
                 amp: str = "none") -> None:
        if accum_steps < 1:
            raise ValueError(f"accum_steps must be at least 1, got {accum_steps}")
        if amp not in AMP_DTYPES:
            raise ValueError(f"amp {amp!r} is not one of {tuple(AMP_DTYPES)}")
        self.model, self.optimizer, self.scheduler, self.ema = model, optimizer, scheduler, ema
        self.device = device if device is not None else torch.device("cpu")
        self.accum_steps, self.clip_grad, self.amp = accum_steps, clip_grad, amp
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")
        self.updates = 0

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "ema": self.ema.module.state_dict() if self.ema is not None else None,
                "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.updates = int(state["updates"])

    def train_one_epoch(
        self,
        net: nn.Module,
        batches: Iterable,
        n_batches: int,
        loss_fn: Callable[[nn.Module, Any], tuple[Tensor, int]],
        *,
        after_step: Callable[[], None] | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> float:
        """One pass over ``n_batches`` batches; returns the mean training loss per sample.

        ``net`` is the module the batches run through (the model, a DDP wrapper of it or a
        compiled one). The gradients of ``accum_steps`` consecutive batches are summed before
        one optimizer step (the last step of an epoch may hold fewer); ``after_step`` runs after
        every step, ``on_batch(step, steps)`` too, counting the epoch's steps from 1.
        """
        net.train()
        total, seen = 0.0, 0
        accum = self.accum_steps
        steps = math.ceil(n_batches / accum)
        ddp = isinstance(net, nn.parallel.DistributedDataParallel)
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(batches):
            first = (i // accum) * accum
            in_step = min(accum, n_batches - first)
            last_of_step = i + 1 == first + in_step
            with net.no_sync() if ddp and not last_of_step else contextlib.nullcontext():
                with autocast(self.device, self.amp):
                    loss, size = loss_fn(net, batch)
                self.scaler.scale(loss / in_step).backward()
            total += float(loss.detach()) * size
            seen += size
            if not last_of_step:
                continue
            self._step()
            if after_step is not None:
                after_step()
            if on_batch is not None:
                on_batch(i // accum + 1, steps)
        return total / max(1, seen)

    def _step(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step_update(num_updates=self.updates)
        if self.clip_grad is not None:
            from timm.utils import dispatch_clip_grad

            self.scaler.unscale_(self.optimizer)
            dispatch_clip_grad(self.model.parameters(), self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.updates += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.updates)


class KeepBest:
    """Model selection on a held-out set: :meth:`offer` each epoch's score (higher is better;
    a tuple breaks ties); the model's state at the best one is kept (a copy), and
    :meth:`offer` answers True once ``patience`` epochs in a row have not improved it
    (``None``: never)."""

    def __init__(self, patience: int | None = None) -> None:
        if patience is not None and patience < 1:
            raise ValueError(f"patience must be at least 1 epoch, got {patience}")
        self.patience = patience
        self.key: Any = None
        self.epoch = 0
        self.state: dict[str, Tensor] | None = None
        self.stale = 0

    def offer(self, epoch: int, key: Any, model: nn.Module) -> bool:
        """Records ``epoch``'s score; True when training should stop."""
        if self.key is None or key > self.key:
            self.key, self.epoch, self.stale = key, epoch, 0
            self.state = copy.deepcopy(model.state_dict())
            return False
        self.stale += 1
        return self.patience is not None and self.stale >= self.patience

    def restore(self, model: nn.Module) -> None:
        """Loads the kept state into ``model``."""
        if self.state is None:
            raise RuntimeError("no epoch was offered: there is no state to restore")
        model.load_state_dict(self.state)
