"""Classification engine for pooled timm models: one run folder per (model, pool, data, seed).

A run is described by a JSON-serialisable :class:`RunSpec`. :func:`run_classification` trains,
writes ``checkpoint.pt`` (weights-only loadable) and ``log.jsonl`` atomically after every epoch,
resumes from the checkpoint when restarted with the same spec, and ends with ``model.safetensors``
and ``result.json`` (test accuracy, retrieval metrics of the test embeddings, head-wise
dependence, learned p). Shuffling, augmentation and dropout are seeded from (seed, epoch), so a
resumed run gives the same weights as an uninterrupted one.

Scaling out needs no new code: under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in
DistributedDataParallel, the batches are sharded with a DistributedSampler (``batch_size`` is
per process) and only rank 0 writes; the run folder must be on a filesystem every rank sees.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from poolwise._io import (
    atomic_path,
    lock_folder,
    read_json,
    remove_stale_temps,
    write_json,
    write_text,
)
from poolwise.vision.data import ImageSplit, collate_batch, load_images, random_crop_flip
from poolwise.vision.dependence import group_dependence
from poolwise.vision.models import PooledModel, create_model, describe_model, param_groups
from poolwise.vision.retrieval import retrieval_metrics


@dataclass
class RunSpec:
    """Everything that defines a classification run (saved as run.json)."""

    model: str = "vit_tiny_patch16_224"
    pool: str = "ggem"
    groups: int | None = None
    norm: str | None = None
    model_kwargs: dict = field(default_factory=dict)
    pretrained: bool = False  # timm's weights (needs the internet or timm's cache)
    checkpoint: str | None = None  # a local timm or poolwise checkpoint to start from
    pool_kwargs: dict = field(default_factory=dict)
    data: str = "embedded"
    classes: list[int] | None = None  # train/evaluate on these classes only (renumbered)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    p_lr_mult: float = 1.0
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    augment: bool = True
    amp: bool = False
    seed: int = 0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def build_model(spec: RunSpec, train: ImageSplit) -> PooledModel:
    kwargs = dict(spec.model_kwargs)
    kwargs.setdefault("num_classes", len(train.classes))
    kwargs.setdefault("in_chans", train.channels)
    torch.manual_seed(spec.seed)
    return create_model(spec.model, pool=spec.pool, groups=spec.groups, norm=spec.norm,
                        pretrained=spec.pretrained, checkpoint=spec.checkpoint,
                        pool_kwargs=spec.pool_kwargs, **kwargs)


def load_splits(spec: RunSpec) -> tuple[ImageSplit, ImageSplit]:
    image_size = spec.model_kwargs.get("img_size")
    splits = load_images(spec.data, image_size=image_size)
    train, test = splits["train"], splits["test"]
    if spec.classes is not None:
        bad = [c for c in spec.classes if not 0 <= c < len(train.classes)]
        if bad:
            raise ValueError(f"classes {bad} out of range for {len(train.classes)} classes")
        train, test = train.subset_classes(spec.classes), test.subset_classes(spec.classes)
    return train, test


def _distributed() -> tuple[int, int, bool]:
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


def make_loader(split: ImageSplit, batch_size: int, *, shuffle: bool, seed: int = 0,
                epoch: int = 0, world: int = 1, rank: int = 0, workers: int = 0) -> DataLoader:
    ds = split.dataset
    if world > 1:
        sampler = torch.utils.data.DistributedSampler(
            ds, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
        sampler.set_epoch(epoch)
    elif shuffle:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        sampler = RandomSampler(ds, generator=generator)
    else:
        sampler = SequentialSampler(ds)
    return DataLoader(ds, batch_sampler=BatchSampler(sampler, batch_size, drop_last=False),
                      collate_fn=collate_batch, num_workers=workers)


def _autocast(device: torch.device, enabled: bool):
    dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    return torch.autocast(device.type, dtype=dtype, enabled=enabled)


@torch.no_grad()
def embed(model: PooledModel, split: ImageSplit, *, batch_size: int = 256,
          device: torch.device | None = None, amp: bool = False) -> dict[str, torch.Tensor]:
    """Test-time outputs of every image: ``pooled`` (the pool's output, before any norm),
    ``embedding`` (``forward_head(pre_logits=True)``), ``logits`` and ``labels``."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = {"pooled": [], "embedding": [], "logits": [], "labels": []}
    for images, labels in make_loader(split, batch_size, shuffle=False):
        with _autocast(device, amp):
            features = model.forward_features(images.to(device))
            pooled = model.pool(features)
            embedding = model.head_from_pooled(pooled, pre_logits=True)
            logits = model.get_classifier()(embedding)
        for key, value in (("pooled", pooled), ("embedding", embedding), ("logits", logits)):
            out[key].append(value.float().cpu())
        out["labels"].append(torch.as_tensor(labels))
    model.train(was_training)
    return {k: torch.cat(v) for k, v in out.items()}


def evaluate(model: PooledModel, split: ImageSplit, *, batch_size: int = 256,
             device: torch.device | None = None, amp: bool = False,
             retrieval: bool = True) -> dict:
    """Accuracy and loss; with ``retrieval``, Recall@K / R-precision / mAP@R of the embeddings
    and the head-wise dependence (mean pairwise linear CKA between the pool's G groups)."""
    out = embed(model, split, batch_size=batch_size, device=device, amp=amp)
    loss = nn.functional.cross_entropy(out["logits"], out["labels"]).item()
    result = {"accuracy": float((out["logits"].argmax(1) == out["labels"]).float().mean()),
              "loss": loss, "n": len(out["labels"])}
    if retrieval:
        result["retrieval"] = retrieval_metrics(out["embedding"], out["labels"])
        groups = model.num_heads or model.groups
        if groups and groups > 1:
            result["dependence"] = group_dependence(out["pooled"], groups)["mean"]
    return result


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """While a run trains, its folder is locked by rank 0 (a second run on it refuses, see
    :func:`poolwise._io.lock_folder`), and temporary files a killed run left are removed."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    with lock_folder(run_dir):
        remove_stale_temps(run_dir)
        yield


def open_run(run_dir: Path, spec) -> tuple[int, int, bool, dict | None]:
    """Rank, world size, whether this call created the process group, and the finished result
    (``{}`` on ranks other than 0) when ``result.json`` already exists, else None. Rank 0
    creates the folder and checks the spec against it; every rank then reads the same folder
    (a shared filesystem)."""
    rank, world, created = _distributed()
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        _check_spec(run_dir, spec)
    if world > 1:
        dist.barrier()
    if not (run_dir / "result.json").exists():
        return rank, world, created, None
    if created:
        dist.destroy_process_group()
    return rank, world, created, (
        read_json(run_dir / "result.json", "run result") if rank == 0 else {})


def resume(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
           device: torch.device) -> tuple[list[dict], int]:
    """Loads what :func:`save_epoch` wrote, if anything; returns (history, first epoch to run)."""
    path = run_dir / "checkpoint.pt"
    if not path.exists():
        return [], 0
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return list(ckpt["history"]), int(ckpt["epoch"]) + 1


def data_parallel(model: nn.Module, device: torch.device, world: int) -> nn.Module:
    """The model wrapped in DistributedDataParallel under torchrun, else the model itself."""
    if world == 1:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)


def save_epoch(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
               history: list[dict]) -> None:
    """The resumable state (``checkpoint.pt``, weights-only loadable) and ``log.jsonl``, both
    written atomically."""
    with atomic_path(run_dir / "checkpoint.pt") as tmp:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "epoch": epoch, "history": history}, tmp)
    write_text(run_dir / "log.jsonl", "".join(json.dumps(h) + "\n" for h in history))


def save_final(run_dir: Path, model: nn.Module, result: dict) -> None:
    """``model.safetensors`` and ``result.json``; the result is written last (it marks a
    finished run)."""
    from safetensors.torch import save_file

    with atomic_path(run_dir / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    write_json(run_dir / "result.json", result)


def _check_spec(run_dir: Path, spec) -> None:
    path = run_dir / "run.json"
    wanted = json.loads(json.dumps(spec.to_json()))
    if path.exists():
        saved = read_json(path, "run configuration")
        diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        if diff:
            raise ValueError(
                f"{run_dir} holds a run with other settings ({', '.join(diff)}); "
                "use another folder or the same settings"
            )


def record_spec(run_dir: Path, spec) -> None:
    """Writes ``run.json`` once the run is known to be valid (its model built); rank 0 only."""
    if int(os.environ.get("RANK", "0")) == 0 and not (run_dir / "run.json").exists():
        write_json(run_dir / "run.json", json.loads(json.dumps(spec.to_json())))


def run_classification(
    spec: RunSpec,
    run_dir: str | Path,
    *,
    device: torch.device | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    workers: int = 0,
    on_model: Callable[[dict], None] | None = None,
) -> dict:
    """Trains (or resumes, or returns the finished result of) the run in ``run_dir``.

    The resolved model (:func:`~poolwise.vision.models.describe_model`) is written to
    ``model.json`` and passed to ``on_model`` before training starts.
    """
    run_dir = Path(run_dir)
    with run_lock(run_dir):
        return _run_classification(spec, run_dir, device=device, on_epoch=on_epoch,
                                   on_batch=on_batch, workers=workers, on_model=on_model)


def _run_classification(spec: RunSpec, run_dir: Path, *, device, on_epoch, on_batch,
                        workers, on_model) -> dict:
    rank, world, created, finished = open_run(run_dir, spec)
    if finished is not None:
        return finished
    device = device or default_device()
    train, test = load_splits(spec)
    model = build_model(spec, train).to(device)
    record_spec(run_dir, spec)
    if rank == 0:
        info = describe_model(model)
        write_json(run_dir / "model.json", info)
        if on_model is not None:
            on_model(info)
    groups = param_groups(model, lr=spec.lr, weight_decay=spec.weight_decay,
                          p_lr_mult=spec.p_lr_mult)
    optimizer = torch.optim.AdamW(groups, lr=spec.lr)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    history, start = resume(run_dir, model, optimizer, device)
    net = data_parallel(model, device, world)
    scaler = torch.amp.GradScaler(enabled=spec.amp and device.type == "cuda")
    criterion = nn.CrossEntropyLoss(label_smoothing=spec.label_smoothing)
    steps_per_epoch = math.ceil(len(train) / (spec.batch_size * world))
    total, warmup = spec.epochs * steps_per_epoch, int(spec.warmup_epochs * steps_per_epoch)
    for epoch in range(start, spec.epochs):
        t0 = time.perf_counter()
        torch.manual_seed(spec.seed * 1_000_003 + epoch)
        generator = torch.Generator().manual_seed(spec.seed * 7_919 + epoch)
        net.train()
        loss_sum = correct = seen = 0
        loader = make_loader(train, spec.batch_size, shuffle=True, seed=spec.seed, epoch=epoch,
                             world=world, rank=rank, workers=workers)
        for step, (images, labels) in enumerate(loader):
            if spec.augment:
                images = random_crop_flip(images, max(1, images.shape[-1] // 14), generator)
            images, labels = images.to(device), torch.as_tensor(labels).to(device)
            factor = _lr_factor(epoch * steps_per_epoch + step, total, warmup)
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base * factor
            with _autocast(device, spec.amp):
                logits = net(images)
                loss = criterion(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += float(loss.detach()) * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
            if on_batch is not None and rank == 0:
                on_batch(step + 1, steps_per_epoch)
        if rank != 0:
            continue
        record = {"epoch": epoch + 1, "train_loss": loss_sum / seen,
                  "train_accuracy": correct / seen}
        test_eval = evaluate(model, test, device=device, amp=spec.amp, retrieval=False)
        record.update({"test_accuracy": test_eval["accuracy"], "test_loss": test_eval["loss"],
                       "p": model.p_values(), "seconds": time.perf_counter() - t0})
        history.append(record)
        save_epoch(run_dir, model, optimizer, epoch, history)
        if on_epoch is not None:
            on_epoch(record)
    if created:
        dist.destroy_process_group()
    if rank != 0:
        return {}
    result = evaluate(model, test, device=device, amp=spec.amp)
    result.update({
        "spec": spec.to_json(), "p": model.p_values(), "groups": model.groups,
        "num_heads": model.num_heads,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": float(np.sum([h["seconds"] for h in history])),
        "classes": list(train.classes), "history": history,
    })
    save_final(run_dir, model, result)
    return result


def load_trained(
    run_dir: str | Path, device: torch.device | str = "cpu"
) -> tuple[PooledModel, RunSpec]:
    """The model of a finished run (``model.safetensors``) and its spec."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    spec = RunSpec(**read_json(run_dir / "run.json", "run configuration"))
    weights = run_dir / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"{weights} not found: the run in {run_dir} has not finished")
    train, _ = load_splits(spec)
    model = build_model(spec, train)
    model.load_state_dict(load_file(str(weights)))
    return model.to(device).eval(), spec
