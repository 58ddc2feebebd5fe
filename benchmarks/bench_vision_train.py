"""Training throughput of poolwise's engine against a plain loop of the shape of timm's train.py.

Both contenders train the same model (timm's ``vit_small_patch16_224`` by default, with a GGeM
head) on the same in-memory images with the same batch size, AMP setting, optimizer (timm's
AdamW from ``create_optimizer_v2``) and scheduler (timm's cosine, stepped per update): the plain
loop steps as timm's ``train.py`` does, poolwise's is
``poolwise.vision.train.engine.Trainer.train_one_epoch``. Repetitions alternate the two (ABAB...),
and the table reports medians and the ratio (target: poolwise >= 1.0x of the plain loop).

    python benchmarks/bench_vision_train.py                 # CPU, batch 8, 224x224
    python benchmarks/bench_vision_train.py --device cuda --amp bf16 --compile --batch 128
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
        x = images[start:start + batch].to(device)
        y = labels[start:start + batch].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        updates += 1
        scheduler.step_update(num_updates=updates)
    return updates


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
    args = parser.parse_args()

    import timm
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    from poolwise.vision.models import create_model
    from poolwise.vision.train.engine import StepConfig, Trainer

    device = torch.device(args.device)
    classes = 10
    images, labels = _data(args.images, args.size, classes)
    steps = -(-args.images // args.batch)

    torch.manual_seed(0)
    plain = create_model(args.model, pool="ggem", num_classes=classes).to(device)
    optimizer = create_optimizer_v2(plain, "adamw", lr=1e-3, weight_decay=0.05)
    scheduler, _ = create_scheduler_v2(optimizer, num_epochs=100, step_on_epochs=False,
                                       updates_per_epoch=steps)
    plain_forward = torch.compile(plain) if args.compile else plain

    torch.manual_seed(0)
    ours = create_model(args.model, pool="ggem", num_classes=classes).to(device)
    trainer = Trainer(ours, StepConfig(epochs=100, steps_per_epoch=steps, lr=1e-3,
                                       weight_decay=0.05, amp=args.amp), device)
    ours_forward = torch.compile(ours) if args.compile else ours
    loss_fn = nn.CrossEntropyLoss()
    batches = [(images[s:s + args.batch], labels[s:s + args.batch])
               for s in range(0, args.images, args.batch)]

    def ours_loss(net, batch):
        x, y = batch
        return loss_fn(ours_forward(x.to(device)), y.to(device)), len(y)

    def time_plain(updates=[0]):  # noqa: B006 (the update count carries across calls)
        start = time.perf_counter()
        updates[0] = plain_epoch(plain_forward, optimizer, scheduler, images, labels,
                                 args.batch, device, args.amp, updates[0])
        if device.type == "cuda":
            torch.cuda.synchronize()
        return args.images / (time.perf_counter() - start)

    def time_ours():
        start = time.perf_counter()
        trainer.train_one_epoch(ours, batches, len(batches), ours_loss)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return args.images / (time.perf_counter() - start)

    time_plain(), time_ours()  # warm-up (allocator, compile)
    rates = {"plain": [], "poolwise": []}
    for _ in range(args.repeats):
        rates["plain"].append(time_plain())
        rates["poolwise"].append(time_ours())
    plain_rate, ours_rate = (statistics.median(rates[k]) for k in ("plain", "poolwise"))
    print(f"{args.model} at {args.size}, batch {args.batch}, {args.device}, amp {args.amp}, "
          f"compile {args.compile}, torch {torch.__version__}, timm {timm.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.repeats} epochs of "
          f"{args.images} images\n")
    print("| trainer | images/s | ratio |\n|---|---|---|")
    print(f"| plain loop (the shape of timm's train.py) | {plain_rate:.1f} | 1.00x |")
    print(f"| poolwise engine | {ours_rate:.1f} | {ours_rate / plain_rate:.2f}x |")


if __name__ == "__main__":
    main()
