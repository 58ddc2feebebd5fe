"""Classification of pooled timm models: one run folder per (model, pool, data, seed).

A run is described by a JSON-serialisable :class:`RunSpec` (a recipe); :func:`run_classification`
trains it through :mod:`poolwise.vision.train.engine` (run folder, resume, DDP, the optimisation
step) and ends with ``result.json``: test accuracy, retrieval metrics of the test embeddings,
head-wise dependence, learned p, and the same for the EMA weights when EMA is on.

The recipe is built from timm's parts: ``create_transform`` for ImageFolder data
(RandomResizedCrop, RandAugment, RandomErasing, the model's mean/std/interpolation; evaluation
resizes and centre-crops at the model's ``crop_pct``), ``Mixup``/CutMix with
``SoftTargetCrossEntropy``, label smoothing, drop path, layer-wise lr decay, timm's scheduler,
``ModelEmaV3``, gradient clipping. In-memory 28x28 data (Fashion-MNIST) keeps a recipe that
suits it: a random crop after 2-pixel zero padding and an optional horizontal flip, batched.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from poolwise._io import load_weights_into, read_json, write_json
from poolwise.runs import Cell, Grid, Launch
from poolwise.runs.sinks import epoch_sinks
from poolwise.vision.data import ArrayImages, ImageSplit, random_crop_flip
from poolwise.vision.models import PooledModel, create_model, describe_model
from poolwise.vision.train import engine
from poolwise.vision.train.dependence import group_dependence
from poolwise.vision.train.evaluate import embed, evaluate
from poolwise.vision.train.inputs import load_splits, make_loader, use_timm_transforms
from poolwise.vision.train.spec import RunSpec


def build_model(spec: RunSpec, train: ImageSplit) -> PooledModel:
    kwargs = dict(spec.model_kwargs)
    kwargs.setdefault("num_classes", len(train.classes))
    kwargs.setdefault("in_chans", train.channels)
    if spec.drop_path:
        kwargs.setdefault("drop_path_rate", spec.drop_path)
    torch.manual_seed(spec.seed)
    return create_model(spec.model, pool=spec.pool, groups=spec.groups, norm=spec.norm,
                        pretrained=spec.pretrained, checkpoint=spec.checkpoint,
                        pool_kwargs=spec.pool_kwargs, **kwargs)


def _loss(spec: RunSpec, n_classes: int) -> tuple[Callable | None, nn.Module | None]:
    """(mixup function or None, criterion); None for a metric-learning loss (built with the
    model, whose embedding size it needs)."""
    from poolwise.vision.retrieval.losses import LOSSES

    if spec.loss not in LOSSES:
        raise ValueError(f"loss {spec.loss!r} is not one of {', '.join(LOSSES)}")
    if spec.loss != "cross_entropy":
        if spec.mixup > 0 or spec.cutmix > 0:
            raise ValueError(f"--loss {spec.loss} takes hard labels: drop --mixup / --cutmix")
        if spec.m_per_class < 2:
            raise ValueError(f"--m-per-class must be at least 2 (pairs of a class), got "
                             f"{spec.m_per_class}")
        return None, None
    if spec.mixup > 0 or spec.cutmix > 0:
        from timm.data import Mixup
        from timm.loss import SoftTargetCrossEntropy

        if n_classes < 2:
            raise ValueError(f"mixup/cutmix need at least two classes, the data has {n_classes}")
        mix = Mixup(mixup_alpha=spec.mixup, cutmix_alpha=spec.cutmix, prob=spec.mixup_prob,
                    label_smoothing=spec.label_smoothing, num_classes=n_classes)
        return mix, SoftTargetCrossEntropy()
    return None, nn.CrossEntropyLoss(label_smoothing=spec.label_smoothing)


class _Embedder(nn.Module):
    """The pooled embedding ``forward_head(forward_features(x), pre_logits=True)``."""

    def __init__(self, model: PooledModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(images), pre_logits=True)


def run_classification(
    spec: RunSpec,
    run_dir: str | Path,
    *,
    device: torch.device | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    workers: int = 0,
    on_model: Callable[[dict], None] | None = None,
    log_to: Sequence[str] = (),
) -> dict:
    """Trains (or resumes, or returns the finished result of) the run in ``run_dir``.

    The resolved model (:func:`~poolwise.vision.models.describe_model`) is written to
    ``model.json`` and passed to ``on_model`` before training starts. ``log_to``: sinks of
    each epoch's record besides ``log.jsonl`` (:mod:`poolwise.runs.sinks`).
    """
    run_dir = Path(run_dir)
    spec.check()
    with engine.run_lock(run_dir), epoch_sinks(log_to, run_dir, on_epoch) as on_epoch:
        return _run_classification(spec, run_dir, device=device, on_epoch=on_epoch,
                                   on_batch=on_batch, workers=workers, on_model=on_model)


def launch_classification(spec: RunSpec, run_dir: str | Path, launch: Launch, *,
                          workers: int = 0, log_to: Sequence[str] = (),
                          on_status: Callable[[dict[str, int]], None] | None = None) -> dict:
    """:func:`run_classification` as ``launch`` says: here, or as one SLURM job of
    ``nodes x tasks_per_node`` tasks (DistributedDataParallel across them, rendezvous from
    SLURM's environment; the run folder is the job's checkpoint, so a job that SLURM's warning
    signal requeues resumes from its last epoch). Returns rank 0's result."""
    if launch.launcher == "local":
        return run_classification(spec, run_dir, workers=workers, log_to=log_to)
    grid = Grid(_classification_cell, (spec, str(run_dir), workers, tuple(log_to)),
                [Cell("train")])
    return launch.executor(run_dir, on_status=on_status).run(grid)["train"]


def _classification_cell(shared: tuple) -> dict:
    spec, run_dir, workers, log_to = shared
    return run_classification(spec, run_dir, workers=workers, log_to=log_to)


def _check_test_split(spec: RunSpec, test: ImageSplit) -> None:
    """Raises ValueError, before any training, when the test images cannot score the run: none
    at all, or no class with two of them (retrieval needs a second image of a query's class).
    A class-disjoint tree's test images are every 10th training image of each class."""
    counts = np.bincount(np.asarray(test.labels, dtype=np.int64), minlength=1)
    held = (" (a class-disjoint tree's test images are every 10th training image of each "
            "class: give its classes 10 images or more, 20 or more for two)")
    if len(test) == 0:
        raise ValueError(f"data {spec.data!r}: no test images to score the run{held}")
    if counts.max() < 2:
        raise ValueError(f"data {spec.data!r}: no test class has two images, so retrieval of "
                         f"the test images is undefined{held}")


def _run_classification(spec: RunSpec, run_dir: Path, *, device, on_epoch, on_batch,
                        workers, on_model) -> dict:
    rank, world, created, finished = engine.open_run(run_dir, spec)
    if finished is not None:
        return finished
    device = device or engine.default_device()
    train, test = load_splits(spec)
    _check_test_split(spec, test)
    model = build_model(spec, train)
    mixup, criterion = _loss(spec, len(train.classes))
    metric = criterion is None
    if metric and world > 1:
        raise ValueError(f"--loss {spec.loss} runs in one process (its class-balanced sampler "
                         "is not distributed); run without torchrun")
    in_memory = isinstance(getattr(train.dataset, "dataset", train.dataset), ArrayImages)
    if not in_memory:
        use_timm_transforms(spec, model, train, test)
    batches_per_epoch = math.ceil(len(train) / (spec.batch_size * world))
    if metric:
        batches_per_epoch = max(1, len(train) // spec.batch_size)
    steps = spec.step_config(math.ceil(batches_per_epoch / spec.accum_steps))  # checks them
    engine.record_spec(run_dir, spec)
    if rank == 0:
        info = describe_model(model)
        write_json(run_dir / "model.json", info)
        if on_model is not None:
            on_model(info)
    memory_format = torch.channels_last if spec.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    if metric:
        from poolwise.vision.retrieval.losses import create_metric_loss

        criterion = create_metric_loss(spec.loss, num_classes=len(train.classes),
                                       embedding_size=model.num_features).to(device)
    trainer = engine.Trainer(model, steps, device, criterion=criterion,
                             criterion_lr_mult=spec.proxy_lr_mult)
    history, start = engine.resume(run_dir, trainer)
    net = engine.data_parallel(model, device, world)
    forward = torch.compile(net) if spec.compile else net
    if metric:
        embedder = _Embedder(model)
        forward = torch.compile(embedder) if spec.compile else embedder

    def loss_fn(net_: nn.Module, batch) -> tuple[torch.Tensor, int]:
        images, labels = batch
        images = images.to(device, memory_format=memory_format)
        labels = torch.as_tensor(labels).to(device)
        if metric:
            return criterion(forward(images).float(), labels), len(labels)
        if mixup is not None:
            images, targets = mixup(images, labels)
        else:
            targets = labels
        return criterion(forward(images).float(), targets), len(labels)

    for epoch in range(start, spec.epochs):
        t0 = time.perf_counter()
        seed = spec.seed * 1_000_003 + epoch
        torch.manual_seed(seed)  # dropout, drop path, timm's transforms
        random.seed(seed)  # RandAugment, Mixup's mode switch
        np.random.seed(seed % 2**32)  # noqa: NPY002 (timm's Mixup draws from the global RNG)
        generator = torch.Generator().manual_seed(spec.seed * 7_919 + epoch)
        loader = make_loader(train, spec.batch_size, shuffle=True, seed=spec.seed, epoch=epoch,
                             world=world, rank=rank, workers=workers,
                             m_per_class=spec.m_per_class if metric else None)
        if in_memory and spec.augment:
            pad = max(1, train.image_size // 14)
            loader = ((random_crop_flip(x, pad, generator, spec.hflip), y) for x, y in loader)
        train_loss = trainer.train_one_epoch(
            net, loader, batches_per_epoch, loss_fn,
            on_batch=on_batch if rank == 0 else None)
        if rank != 0:
            continue
        group = trainer.optimizer.param_groups[0]
        record = {"epoch": epoch + 1, "train_loss": train_loss,
                  "lr": group["lr"] / group.get("lr_scale", 1.0)}  # the scheduled base lr
        test_eval = evaluate(model, test, device=device, amp=spec.amp, retrieval=metric,
                             workers=workers)
        if metric:  # the classifier is not trained: retrieval of the test images
            record.update({"test_recall@1": test_eval["retrieval"]["recall@1"],
                           "test_map@r": test_eval["retrieval"]["map@r"]})
        else:
            record.update({"test_accuracy": test_eval["accuracy"],
                           "test_loss": test_eval["loss"]})
        if trainer.ema is not None:
            ema_eval = evaluate(trainer.ema.module, test, device=device, amp=spec.amp,
                                retrieval=metric, workers=workers)
            key, value = (("ema_test_recall@1", ema_eval["retrieval"]["recall@1"]) if metric
                          else ("ema_test_accuracy", ema_eval["accuracy"]))
            record[key] = value
        record.update({"p": model.p_values(), "seconds": time.perf_counter() - t0})
        history.append(record)
        engine.save_epoch(run_dir, trainer, epoch, history)
        if on_epoch is not None:
            on_epoch(record)
    if created:
        torch.distributed.destroy_process_group()
    if rank != 0:
        return {}
    result = evaluate(model, test, device=device, amp=spec.amp, workers=workers)
    if trainer.ema is not None:
        result["ema"] = evaluate(trainer.ema.module, test, device=device, amp=spec.amp,
                                 workers=workers)
    if metric:  # an untrained classifier's accuracy and loss mean nothing
        for part in (result, result.get("ema", {})):
            part.update(accuracy=None, loss=None)
    result.update({
        "spec": spec.to_json(), "p": model.p_values(), "groups": model.groups,
        "num_heads": model.num_heads,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": float(np.sum([h["seconds"] for h in history])),
        "classes": list(train.classes), "history": history,
    })
    return engine.save_final(run_dir, trainer, result)


def load_trained(
    run_dir: str | Path, device: torch.device | str = "cpu", *, ema: bool = False
) -> tuple[PooledModel, RunSpec]:
    """The model of a finished run (``model.safetensors``, or with ``ema`` its EMA weights)
    and its spec."""
    run_dir = Path(run_dir)
    settings = read_json(run_dir / "run.json", "run configuration")
    settings.pop("data_fingerprint", None)  # what the data was; the spec is the rest
    spec = RunSpec(**settings)
    weights = run_dir / ("model_ema.safetensors" if ema else "model.safetensors")
    if not weights.exists():
        raise FileNotFoundError(f"{weights} not found: the run in {run_dir} has not finished"
                                + (" or trained without EMA" if ema else ""))
    train, _ = load_splits(spec)
    model = build_model(spec, train)
    load_weights_into(model, weights, "run's model")
    return model.to(device).eval(), spec


def run_dependence(run_dir: str | Path, *, max_images: int | None = None) -> dict:
    """Head-wise dependence of a finished classification run on its test images."""
    model, spec = load_trained(run_dir)
    _, test = load_splits(spec)
    pooled = embed(model, test)["pooled"]
    if max_images is not None:
        pooled = pooled[:max_images]
    groups = model.num_heads or model.groups
    if not groups or groups < 2:
        raise ValueError(f"{run_dir}: the model has no head groups to compare")
    result = group_dependence(pooled, groups)
    result.update({"run": str(run_dir), "pool": spec.pool, "seed": spec.seed, "groups": groups})
    return result
