"""Training throughput of poolwise's engine against a plain loop of the shape of timm's train.py.

Both contenders train the same model (timm's ``vit_small_patch16_224`` by default, with a GGeM
head) on the same in-memory images with the same batch size, AMP setting, optimizer (timm's
AdamW from ``create_optimizer_v2``) and scheduler (timm's cosine, stepped per update): the plain
loop steps as timm's ``train.py`` does, poolwise's is
``poolwise.vision.train.engine.Trainer.train_one_epoch``. Repetitions alternate the two (ABAB...),
and the table reports medians and the ratio (target: poolwise >= 1.0x of the plain loop).

    python benchmarks/bench_vision_train.py                 # CPU, batch 8, 224x224
    python benchmarks/bench_vision_train.py --device cuda --amp bf16 --compile --batch 128 \
        --channels-last
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn


def _data(n: int, size: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(classes, (n,), generator=g)


def plain_epoch(model, optimizer, scheduler, images, labels, batch, device, amp, updates):
    """The inner loop of timm's train.py: forward under autocast, backward, step, scheduler."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    for start in range(0, len(images), batch):
        x, y = images[start:start + batch], labels[start:start + batch]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        updates += 1
        scheduler.step_update(num_updates=updates)
    return updates


def measure(model_name: str = "vit_small_patch16_224", *, size: int = 224, batch: int = 8,
            images: int = 48, repeats: int = 3, device: str | torch.device = "cpu",
            amp: str = "none", compile: bool = False, channels_last: bool = False,
            model_kwargs: dict | None = None) -> dict:
    """Median images/s of the plain loop and of poolwise's engine, trained side by side on the
    same in-memory images (on ``device``), alternating epochs; AdamW is timm's, fused on CUDA in
    both. Returns ``{"plain": rate, "poolwise": rate, "rates": {...}}``."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    from poolwise.vision.models import create_model
    from poolwise.vision.train.engine import StepConfig, Trainer

    device = torch.device(device)
    classes, kwargs = 10, {"img_size": size, **(model_kwargs or {})}
    data, labels = (t.to(device) for t in _data(images, size, classes))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    data = data.contiguous(memory_format=fmt)
    steps = -(-images // batch)
    fused = {"fused": True} if device.type == "cuda" else {}

    def build():
        torch.manual_seed(0)
        return create_model(model_name, pool="ggem", num_classes=classes, **kwargs).to(
            device, memory_format=fmt)

    plain = build()
    optimizer = create_optimizer_v2(plain, "adamw", lr=1e-3, weight_decay=0.05, **fused)
    scheduler, _ = create_scheduler_v2(optimizer, num_epochs=100, step_on_epochs=False,
                                       updates_per_epoch=steps)
    plain_forward = torch.compile(plain) if compile else plain
    ours = build()
    trainer = Trainer(ours, StepConfig(epochs=100, steps_per_epoch=steps, lr=1e-3,
                                       weight_decay=0.05, amp=amp), device)
    ours_forward = torch.compile(ours) if compile else ours
    loss_fn = nn.CrossEntropyLoss()
    batches = [(data[s:s + batch], labels[s:s + batch]) for s in range(0, images, batch)]

    def ours_loss(net, b):
        x, y = b
        return loss_fn(ours_forward(x), y), len(y)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    updates = [0]

    def time_plain():
        sync()
        start = time.perf_counter()
        updates[0] = plain_epoch(plain_forward, optimizer, scheduler, data, labels, batch,
                                 device, amp, updates[0])
        sync()
        return images / (time.perf_counter() - start)

    def time_ours():
        sync()
        start = time.perf_counter()
        trainer.train_one_epoch(ours, batches, len(batches), ours_loss)
        sync()
        return images / (time.perf_counter() - start)

    time_plain(), time_ours()  # warm-up (allocator, compile)
    rates = {"plain": [], "poolwise": []}
    for _ in range(repeats):
        rates["plain"].append(time_plain())
        rates["poolwise"].append(time_ours())
    return {"plain": statistics.median(rates["plain"]),
            "poolwise": statistics.median(rates["poolwise"]), "rates": rates}


def markdown(result: dict) -> str:
    plain, ours = result["plain"], result["poolwise"]
    return ("| trainer | images/s | ratio |\n|---|---|---|\n"
            f"| plain loop (the shape of timm's train.py) | {plain:.1f} | 1.00x |\n"
            f"| poolwise engine | {ours:.1f} | {ours / plain:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--images", type=int, default=48, help="images per timed epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=("none", "bf16"), default="none")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()

    import timm

    result = measure(args.model, size=args.size, batch=args.batch, images=args.images,
                     repeats=args.repeats, device=args.device, amp=args.amp,
                     compile=args.compile, channels_last=args.channels_last)
    print(f"{args.model} at {args.size}, batch {args.batch}, {args.device}, amp {args.amp}, "
          f"compile {args.compile}, channels-last {args.channels_last}, torch "
          f"{torch.__version__}, timm {timm.__version__}, {torch.get_num_threads()} threads; "
          f"median of {args.repeats} epochs of {args.images} images\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
