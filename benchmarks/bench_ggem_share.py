"""The GGeM head's share of a ViT training step (target: under 1 %).

One training step of timm's ``vit_small_patch16_224`` with poolwise's GGeM head (forward,
backward, AdamW step) is timed beside the GGeM pooling alone (forward and backward on token
tensors of the step's shape, with the head's exponents), alternating the two; the share is the
median pooling time over the median step time. A step with the ``avg`` head is timed as well,
as a second view of the same cost.

    python benchmarks/bench_ggem_share.py                    # CPU, batch 8, 224x224
    python benchmarks/bench_ggem_share.py --device cuda --batch 128
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from timm.optim import create_optimizer_v2

    from poolwise.pooling import ggem
    from poolwise.vision.models import create_model

    device = torch.device(args.device)
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    labels = torch.randint(10, (args.batch,), device=device)
    models = {name: create_model(args.model, pool=name, num_classes=10).to(device)
              for name in ("ggem", "avg")}
    optimizers = {name: create_optimizer_v2(m, "adamw", lr=1e-4) for name, m in models.items()}
    loss_fn = nn.CrossEntropyLoss()
    with torch.no_grad():
        tokens = models["ggem"].backbone.forward_features(images)
    head = models["ggem"].pool
    prefix = getattr(head, "num_prefix_tokens", 0)
    pooled_tokens = tokens[:, prefix:].detach().clone().requires_grad_()
    p = head.p.detach().clone().requires_grad_()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(name: str) -> float:
        model, optimizer = models[name], optimizers[name]
        sync()
        start = time.perf_counter()
        loss = loss_fn(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync()
        return time.perf_counter() - start

    def pooling() -> float:
        sync()
        start = time.perf_counter()
        pooled_tokens.grad, p.grad = None, None
        ggem(pooled_tokens, p).sum().backward()
        sync()
        return time.perf_counter() - start

    for name in models:  # warm-up
        step(name)
    pooling()
    times = {"ggem step": [], "avg step": [], "ggem pooling": []}
    for _ in range(args.repeats):
        times["ggem step"].append(step("ggem"))
        times["ggem pooling"].append(pooling())
        times["avg step"].append(step("avg"))
    median = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"{args.model} at {args.size}, batch {args.batch}, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; tokens {tuple(pooled_tokens.shape)}, "
          f"G = {p.numel()}; median of {args.repeats}\n")
    print("| measured | ms |")
    print("|---|---|")
    for key, value in median.items():
        print(f"| {key} | {value:.2f} |")
    print(f"\nGGeM pooling, forward + backward: {median['ggem pooling'] / median['ggem step']:.2%}"
          " of the GGeM training step")


if __name__ == "__main__":
    main()
