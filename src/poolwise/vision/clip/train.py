"""Contrastive image-text training of a pooled open_clip model, resumable like the classifier.

The loss is CLIP's symmetric cross-entropy over the in-batch similarity matrix scaled by the
learnable temperature (``logit_scale``, clamped after every step so that exp(logit_scale) <= 100,
as in CLIP), with one change that matters when captions repeat: every caption in the batch that
describes an image (by the image-to-captions map) is a positive for it, and the target is
uniform over the positives. With unique captions this is exactly CLIP's loss.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from poolwise._io import write_json
from poolwise.pooling import channel_groups, learned_exponents
from poolwise.runs.sinks import epoch_sinks
from poolwise.vision.clip.data import (
    FASHION_MNIST_NAMES,
    ZERO_SHOT_TEMPLATES,
    PairedSplit,
    fashion_mnist_pairs,
    read_pairs_csv,
)
from poolwise.vision.clip.metrics import image_text_recall, zero_shot_accuracy
from poolwise.vision.clip.towers import create_clip, pool_of
from poolwise.vision.data import random_crop_flip
from poolwise.vision.models import P_LR_MULT
from poolwise.vision.train import engine

MAX_LOGIT_SCALE = math.log(100.0)
# a CPU-sized dual encoder for 28x28 images: ViT 7x7 patches, width 96, 4 blocks of 6 heads;
# text transformer width 64, 2 layers, 16 tokens; 64-d joint space
TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 28, "patch_size": 7, "width": 96, "layers": 4,
                   "head_width": 16, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "width": 64, "heads": 4, "layers": 2},
}


@dataclass
class ClipSpec:
    model: str | None = None  # an open_clip model name; None: the ``config`` dict
    pretrained: str | None = None
    config: dict = field(default_factory=lambda: json.loads(json.dumps(TINY_CLIP)))
    pool: str = "ggem"
    groups: int | None = None
    pool_kwargs: dict = field(default_factory=dict)
    data: str = "embedded"  # 'embedded', 'fashion-mnist', or TRAIN.csv[,TEST.csv]
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    p_lr_mult: float = P_LR_MULT
    warmup_epochs: float = 1.0
    augment: bool = True
    seed: int = 0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def load_pairs(spec: ClipSpec) -> tuple[PairedSplit, PairedSplit]:
    if spec.data in ("embedded", "fashion-mnist"):
        pairs = fashion_mnist_pairs(spec.data)
        return pairs["train"], pairs["test"]
    files = spec.data.split(",")
    if len(files) != 2:
        raise ValueError(f"data {spec.data!r}: expected 'embedded', 'fashion-mnist' or "
                         "TRAIN.csv,TEST.csv")
    size = spec.config.get("vision_cfg", {}).get("image_size", 224)
    return tuple(read_pairs_csv(f, image_size=size) for f in files)


def build(spec: ClipSpec) -> tuple[nn.Module, Callable]:
    torch.manual_seed(spec.seed)
    if spec.model is None:
        return create_clip(config=spec.config, pool=spec.pool, groups=spec.groups,
                           pool_kwargs=spec.pool_kwargs)
    return create_clip(spec.model, pretrained=spec.pretrained, pool=spec.pool,
                       groups=spec.groups, pool_kwargs=spec.pool_kwargs)


def _rgb(images: Tensor) -> Tensor:
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def clamp_logit_scale(model: nn.Module) -> None:
    """CLIP's clamp: the learnable temperature scale exp(logit_scale) stays in [1, 100]."""
    with torch.no_grad():
        model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)


def contrastive_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor,
                     positive: Tensor) -> Tensor:
    """Symmetric multi-positive InfoNCE; ``positive[i, j]`` is True when text j describes
    image i (the diagonal must be True)."""
    image_emb = torch.nn.functional.normalize(image_emb, dim=1)
    text_emb = torch.nn.functional.normalize(text_emb, dim=1)
    logits = logit_scale * image_emb @ text_emb.T
    target = positive.float()
    i2t = -(target / target.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    t2i = -(target.T / target.T.sum(1, keepdim=True) * logits.T.log_softmax(1)).sum(1).mean()
    return (i2t + t2i) / 2


@torch.no_grad()
def evaluate(model: nn.Module, tokenizer: Callable, pairs: PairedSplit, batch_size: int = 256,
             device: torch.device | str = "cpu") -> dict:
    model.eval()
    images = []
    ds = pairs.images.dataset
    for start in range(0, len(ds), batch_size):
        batch, _ = ds.__getitems__(list(range(start, min(len(ds), start + batch_size))))
        images.append(model.encode_image(_rgb(batch).to(device)))
    image_emb = torch.cat(images).cpu()
    text_emb = torch.cat([model.encode_text(tokenizer(pairs.captions[s:s + batch_size]).to(device))
                          for s in range(0, len(pairs.captions), batch_size)]).cpu()
    result = image_text_recall(image_emb, text_emb, pairs.image_to_captions)
    if pairs.class_captions is not None:
        prompts = [t.format(names[0]) for names in FASHION_MNIST_NAMES for t in ZERO_SHOT_TEMPLATES]
        prompt_emb = model.encode_text(tokenizer(prompts).to(device)).cpu().reshape(
            len(FASHION_MNIST_NAMES), len(ZERO_SHOT_TEMPLATES), -1)
        labels = torch.as_tensor(pairs.images.labels)
        result["zero-shot accuracy"] = zero_shot_accuracy(image_emb, labels, prompt_emb)
    return result


class _AllGather(torch.autograd.Function):
    """Equal-sized all-gather whose backward hands each rank the sum over ranks of the gradient
    of its own rows (every rank computes the same loss, and DDP then averages: the product is
    the single-process gradient)."""

    @staticmethod
    def forward(ctx, local: Tensor) -> Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), local.shape[0]
        out = local.new_empty(dist.get_world_size() * local.shape[0], *local.shape[1:])
        dist.all_gather_into_tensor(out, local.contiguous())
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def _gather_batch(local: Tensor, sizes: list[int]) -> Tensor:
    """Concatenates every rank's rows (rank order) with gradients flowing back to each rank.

    Ranks may hold one row fewer than others (the last batch); rows are padded to the largest
    count for the collective and the padding is dropped again.
    """
    rows = max(sizes)
    if local.shape[0] < rows:
        local = torch.cat([local, local.new_zeros(rows - local.shape[0], *local.shape[1:])])
    full = _AllGather.apply(local)
    return torch.cat([full[r * rows:r * rows + size] for r, size in enumerate(sizes)])


def describe_clip(model: nn.Module, spec: ClipSpec) -> dict:
    """The resolved dual encoder, as a CLIP run prints and stores it (``model.json``)."""
    pool = pool_of(model)
    visual = model.visual
    return {
        "name": spec.model or "config",
        "parameters": sum(p.numel() for p in model.parameters()),
        "image_parameters": sum(p.numel() for p in visual.parameters()),
        "patch_grid": list(getattr(visual, "grid_size", ()) or ()) or None,
        "pool": spec.pool,
        "groups": channel_groups(pool),
        "embed_dim": int(model.text_projection.shape[1]) if hasattr(model, "text_projection")
        else None,
    }


def run_clip(spec: ClipSpec, run_dir: str | Path, *,
             device: torch.device | None = None,
             on_epoch: Callable[[dict], None] | None = None,
             on_batch: Callable[[int, int], None] | None = None,
             on_model: Callable[[dict], None] | None = None,
             log_to: Sequence[str] = ()) -> dict:
    """Trains (or resumes, or returns the finished result of) the CLIP run in ``run_dir``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the model runs data-parallel (DDP): every rank draws
    the same global batch (same order, captions and augmentation), encodes its contiguous share,
    and the loss is computed over the whole global batch from embeddings gathered with their
    gradients, so a step is the single-process step (up to float summation order). Rank 0
    writes the run folder (a shared filesystem) and evaluates.
    """
    run_dir = Path(run_dir)
    with engine.run_lock(run_dir), epoch_sinks(log_to, run_dir, on_epoch) as on_epoch:
        return _run_clip(spec, run_dir, device=device, on_epoch=on_epoch, on_batch=on_batch,
                         on_model=on_model)


def _run_clip(spec: ClipSpec, run_dir: Path, *, device, on_epoch, on_batch, on_model) -> dict:
    rank, world, created, finished = engine.open_run(run_dir, spec)
    if finished is not None:
        return finished
    device = device or engine.default_device()
    train, test = load_pairs(spec)
    model, tokenizer = build(spec)
    engine.record_spec(run_dir, spec)
    if rank == 0:
        info = describe_clip(model, spec)
        write_json(run_dir / "model.json", info)
        if on_model is not None:
            on_model(info)
    model.to(device)
    n = len(train.images)
    steps = math.ceil(n / spec.batch_size)
    trainer = engine.Trainer(model, engine.StepConfig(
        epochs=spec.epochs, steps_per_epoch=steps, lr=spec.lr, weight_decay=spec.weight_decay,
        p_lr_mult=spec.p_lr_mult, warmup_epochs=spec.warmup_epochs), device)
    history, start = engine.resume(run_dir, trainer)
    net = engine.data_parallel(model, device, world)
    caption_sets = [set(c) for c in train.image_to_captions]

    def batches(order: Tensor, generator: torch.Generator):
        """(images, tokens, positive) per step, drawn in order from the epoch's generator."""
        for step in range(steps):
            index = order[step * spec.batch_size:(step + 1) * spec.batch_size].tolist()
            images, _ = train.images.dataset.__getitems__(index)
            if spec.augment:
                images = random_crop_flip(images, max(1, images.shape[-1] // 14), generator)
            chosen = [train.image_to_captions[i][int(torch.randint(
                len(train.image_to_captions[i]), (1,), generator=generator))] for i in index]
            positive = torch.tensor([[c in caption_sets[i] for c in chosen] for i in index])
            yield _rgb(images), tokenizer([train.captions[c] for c in chosen]), positive

    def loss_fn(net_, batch) -> tuple[Tensor, int]:
        images, text, positive = batch
        if world > 1:  # this rank's share of the global batch, through DDP's forward
            shares = torch.arange(len(images)).tensor_split(world)
            sizes = [len(share) for share in shares]
            mine = shares[rank]
            image_emb, text_emb, scale = net_(images[mine].to(device),
                                              text[mine].to(device))[:3]
            image_emb = _gather_batch(image_emb, sizes)
            text_emb = _gather_batch(text_emb, sizes)
        else:
            image_emb = model.encode_image(images.to(device))
            text_emb = model.encode_text(text.to(device))
            scale = model.logit_scale.exp()
        return contrastive_loss(image_emb, text_emb, scale, positive.to(device)), len(images)

    for epoch in range(start, spec.epochs):
        t0 = time.perf_counter()
        torch.manual_seed(spec.seed * 1_000_003 + epoch)
        generator = torch.Generator().manual_seed(spec.seed * 7_919 + epoch)
        order = torch.randperm(n, generator=generator)
        train_loss = trainer.train_one_epoch(
            net, batches(order, generator), steps, loss_fn,
            after_step=lambda: clamp_logit_scale(model),
            on_batch=on_batch if rank == 0 else None)
        if rank != 0:
            continue
        record = {"epoch": epoch + 1, "train_loss": train_loss,
                  "logit_scale": float(model.logit_scale.detach().exp()),
                  "p": _p(model), "seconds": time.perf_counter() - t0}
        history.append(record)
        engine.save_epoch(run_dir, trainer, epoch, history)
        if on_epoch is not None:
            on_epoch(record)
    if created:
        dist.destroy_process_group()
    if rank != 0:
        return {}
    result = evaluate(model, tokenizer, test, device=device)
    result.update({"spec": spec.to_json(), "p": _p(model), "history": history,
                   "parameters": sum(p.numel() for p in model.parameters()),
                   "train_seconds": float(np.sum([h["seconds"] for h in history])),
                   "test_images": len(test.images), "test_captions": len(test.captions),
                   "processes": world})
    return engine.save_final(run_dir, trainer, result)


def _p(model) -> list[float] | None:
    p = learned_exponents(pool_of(model))
    return None if p is None else p.detach().tolist()
