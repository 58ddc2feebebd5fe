"""Training one pain model on in-memory windows: weighted cross-entropy, Adam, model selection.

All windows of a fold live in memory as one tensor (no per-window file loading). Each epoch
draws ``samples_per_epoch`` training windows (default: as many as there are training windows,
so the number of gradient steps does not depend on how the training set was expanded), applies
online augmentation if asked, and ends with a pass over the selection windows; the state with
the best selection macro F1 (ties: lower selection loss) is kept, and training stops after
``patience`` epochs without improvement.

``compile=True`` runs the training forward through ``torch.compile`` (same parameters);
evaluation always runs the plain module. The CNN's convolutions and batch norms run on
poolwise's C++ kernels where a compiler can build them, eagerly and compiled alike (see
:mod:`poolwise.pain.models.conv`, and docs/pain.md for the measured speed).

The steps are :class:`poolwise.runs.loop.StepLoop`'s and the model selection
:class:`poolwise.runs.loop.KeepBest`'s, as for every model poolwise trains.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from poolwise.pain.augment import augment_batch, n_variants
from poolwise.pain.metrics import binary_metrics, multiclass_metrics
from poolwise.runs.loop import KeepBest, StepLoop


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one fit (the paper's: Adam, lr 1e-3, batch 40).

    ``min_steps``: a budget of optimiser steps; the fit runs at least ``epochs`` epochs and at
    least as many as ``min_steps`` needs, so a small data set (a few steps per epoch) is not
    under-trained. 0 (the default of LOSO runs, which reproduce the paper's 20 epochs) turns it
    off. ``patience`` stops once that many epochs have not improved the selection macro F1.
    """

    epochs: int = 20
    min_steps: int = 0
    batch_size: int = 40
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int | None = None
    online_augment: bool = True
    samples_per_epoch: int | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"epochs, batch_size and lr must be positive: {self}")
        if self.min_steps < 0:
            raise ValueError(f"min_steps must be >= 0, got {self.min_steps}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be at least 1 epoch (None: off), got {self.patience}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitResult:
    epoch_chosen: int
    history: list[dict] = field(default_factory=list)
    class_weights: list[float] = field(default_factory=list)
    final_state: dict[str, Tensor] = field(default_factory=dict)


def class_weights(y: np.ndarray, n_classes: int = 2) -> np.ndarray:
    """w_c = 1 - n_c / N from the training labels (the authors' weighting)."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes)
    return (1.0 - counts / counts.sum()).astype(np.float32)


# Evaluation batch: 128 windows keep the CNN's maps in cache; L-SFAN on 2 cores scores 4,400
# windows/s at 128 against 1,500 at 512 (eval mode, 30 x 180 windows).
EVAL_BATCH = 128


@torch.inference_mode()
def predict_logits(model: nn.Module, X: Tensor, batch_size: int = EVAL_BATCH) -> Tensor:
    model.eval()
    return torch.cat([model(X[i : i + batch_size]) for i in range(0, len(X), batch_size)])


def class_probabilities(model: nn.Module, X: Tensor, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Softmax probabilities (n, K) of every class."""
    return torch.softmax(predict_logits(model, X, batch_size).float(), 1).numpy()


def _selection_macro_f1(y: np.ndarray, prob: np.ndarray) -> float | None:
    """Macro F1 on the selection windows: the binary definition (threshold 0.5) for two
    classes, the K-class one (argmax) otherwise."""
    if prob.shape[1] == 2:
        return binary_metrics(y, prob[:, 1])["macro_f1"]
    return multiclass_metrics(y, prob)["macro_f1"]


def fit_new_model(
    name: str,
    model_kwargs: dict,
    X_train: Tensor,
    y_train: Tensor,
    X_select: Tensor,
    y_select: Tensor,
    config: TrainConfig,
    seed: int,
    *,
    before_fit: Callable[[nn.Module], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[nn.Module, FitResult]:
    """The one core that builds and fits a pain model, for a LOSO fold
    (:func:`poolwise.pain.loso.folds.run_fold`) and for :class:`~poolwise.pain.estimator.
    PainClassifier` alike: torch seeded with ``seed``, the registered model ``name`` built with
    ``model_kwargs`` (then ``before_fit``, e.g. the reference protocol's shared CNN), then
    :func:`fit` with a generator seeded with ``seed``. Inputs are already normalised."""
    from poolwise.pain.models import create_model

    torch.manual_seed(seed)
    model = create_model(name, **model_kwargs)
    if before_fit is not None:
        before_fit(model)
    result = fit(model, X_train, y_train, X_select, y_select, config,
                 torch.Generator().manual_seed(seed), on_epoch=on_epoch, on_batch=on_batch)
    return model, result


def _fit_closed_form(model, X_train, y_train, X_select, y_select, weights, loss_fn, generator,
                     on_epoch, on_batch) -> FitResult:
    """A model fitted in one solve (the ROCKET family): the same class weights as the loss of
    the networks, its random kernels seeded from ``generator``; one "epoch" in the history."""
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    y = y_train.numpy()
    chosen = model.fit_windows(X_train.numpy(), y, weights[y], seed)
    if on_batch is not None:
        on_batch(len(X_train))
    logits = predict_logits(model, X_select)
    record = {"epoch": 1, "train_loss": chosen.pop("train_loss"),
              "select_loss": float(loss_fn(logits, y_select)),
              "select_macro_f1": _selection_macro_f1(
                  y_select.numpy(), torch.softmax(logits.float(), 1).numpy()),
              **chosen}
    if on_epoch is not None:
        on_epoch(record)
    return FitResult(epoch_chosen=1, history=[record], class_weights=weights.tolist(),
                     final_state=copy.deepcopy(model.state_dict()))


def fit(
    model: nn.Module,
    X_train: Tensor,
    y_train: Tensor,
    X_select: Tensor,
    y_select: Tensor,
    config: TrainConfig,
    generator: torch.Generator,
    on_epoch: Callable[[dict], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> FitResult:
    """Trains ``model`` in place and leaves it in its selected state (eval mode).

    A ``closed_form`` model (the ROCKET family) is fitted by its own ``fit_windows`` on the
    training windows instead: ``config``'s epochs, batches and augmentation do not apply.

    The state after the last epoch is kept in ``FitResult.final_state`` (the reference
    protocol carries it to the next fold).
    """
    if len(X_train) == 0 or len(X_select) == 0:
        raise ValueError(
            f"need training and selection windows, got {len(X_train)} and {len(X_select)}"
        )
    if len(torch.unique(y_train)) < 2:
        raise ValueError(
            f"the {len(y_train)} training windows hold only class {int(y_train[0])}: "
            "a classifier cannot be fitted"
        )
    n_classes = int(max(y_train.max(), y_select.max())) + 1
    weights = class_weights(y_train.numpy(), n_classes)
    loss_fn = nn.CrossEntropyLoss(weight=torch.from_numpy(weights))
    if getattr(model, "closed_form", False):
        return _fit_closed_form(model, X_train, y_train, X_select, y_select, weights, loss_fn,
                                generator, on_epoch, on_batch)
    loop = StepLoop(model, torch.optim.Adam(model.parameters(), lr=config.lr,
                                            weight_decay=config.weight_decay))
    per_epoch = min(config.samples_per_epoch or len(X_train), len(X_train))
    steps = math.ceil(per_epoch / config.batch_size)
    epochs = max(config.epochs, math.ceil(config.min_steps / steps))
    train_forward = torch.compile(model, dynamic=False) if config.compile else model

    def batches(order: Tensor):
        for step in range(steps):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            x = X_train[index]
            if config.online_augment:
                variant = torch.randint(n_variants(), (len(x),), generator=generator)
                x = augment_batch(x, variant, generator)
            yield index, x

    def batch_loss(net: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, int]:
        index, x = batch
        # a short last batch runs eagerly: a compiled graph per batch size would recompile
        forward = train_forward if len(index) == config.batch_size else net
        return loss_fn(forward(x), y_train[index]), len(index)

    def windows_done(step: int, _steps: int) -> None:
        on_batch(min(config.batch_size, per_epoch - (step - 1) * config.batch_size))

    result = FitResult(epoch_chosen=0, class_weights=weights.tolist())
    best = KeepBest(config.patience)
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(X_train), generator=generator)[:per_epoch]
        train_loss = loop.train_one_epoch(
            model, batches(order), steps, batch_loss,
            on_batch=windows_done if on_batch is not None else None)
        logits = predict_logits(model, X_select)
        select_loss = float(loss_fn(logits, y_select))
        macro_f1 = _selection_macro_f1(y_select.numpy(), torch.softmax(logits.float(), 1).numpy())
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "select_loss": select_loss,
            "select_macro_f1": macro_f1,
        }
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        stop = best.offer(epoch, (macro_f1 if macro_f1 is not None else -1.0, -select_loss), model)
        if stop:
            break
    result.epoch_chosen = best.epoch
    result.final_state = copy.deepcopy(model.state_dict())
    best.restore(model)
    model.eval()
    return result
