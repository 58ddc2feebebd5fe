"""GPU smoke run: one report of Markdown tables from a lent GPU machine.

Sized to finish within 8 minutes on one GPU (not yet run on one); never a test: no test needs
a GPU.

- **train**: ``vision train``'s engine with the ImageNet recipes' settings (ViT-B/16 at 224,
  bf16 autocast, ``torch.compile``, timm's AdamW fused, channels-last) for a few hundred steps
  on synthetic images, images/s against the loop of the shape of timm's ``train.py``
  (``bench_vision_train.measure``), alternating epochs.
- **probe**: the probe's token pass (``poolwise.vision.probe.token_batch``: ViT-B/16's final
  tokens copied to the host, as ``vision probe`` caches them), images/s.
- **ggem**: the fused Triton GGeM against ``mean`` and against GGeM's PyTorch-ops path,
  forward and forward + backward, in float32 and bfloat16 (ratios to ``mean`` beside the
  milliseconds; each repetition times the contenders back to back); target: forward + backward
  <= 1.5x ``mean``. The kernel's first-use check on the device is reported first, so a table
  is never read as Triton's when the PyTorch-ops path ran.
- **ddp**: the engine under DistributedDataParallel over NCCL, one process per GPU, when the
  machine has more than one GPU: images/s in all, and against one GPU's.

    python benchmarks/gpu_smoke.py                      # cuda:0, every section
    python benchmarks/gpu_smoke.py --sections ggem --repeats 5 --json gpu.json

Without a CUDA device it says so and exits with status 2. ``--dry-run`` (or ``--interpret``)
runs every section on the CPU with tiny shapes: GGeM through Triton's interpreter, DDP over
gloo with two processes (it checks the script, not the speed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys

DTYPES = ("float32", "bfloat16")
TARGET = 1.5


def ggem_row(shape, groups: int, dtype_name: str, repeats: int, device) -> dict:
    """Median ms of forward and forward + backward for mean, the Triton GGeM and the PyTorch-ops
    GGeM on one (B, N, C) input of ``dtype_name``."""
    import torch
    from bench_pooling import timed

    from poolwise import kernels
    from poolwise.pooling import ggem

    torch.manual_seed(0)
    dtype = getattr(torch, dtype_name)
    x = torch.randn(shape, device=device).abs().to(dtype).requires_grad_()
    p = torch.full((groups,), 3.0, device=device, requires_grad=True)

    def torch_ops(t):
        with kernels.use_native(False):
            return ggem(t, p)

    contenders = {"mean": lambda t: t.mean(1), "triton": lambda t: ggem(t, p), "torch": torch_ops}
    times = {name: {"fwd": [], "fwdbwd": []} for name in contenders}

    def forward(fn):
        with torch.no_grad():
            fn(x)

    def forward_backward(fn):
        x.grad, p.grad = None, None
        fn(x).float().sum().backward()

    for fn in contenders.values():  # warm-up (and compilation)
        forward(fn)
        forward_backward(fn)
    for _ in range(repeats):
        for name, fn in contenders.items():
            times[name]["fwd"].append(timed(lambda fn=fn: forward(fn), device)[0])
            times[name]["fwdbwd"].append(timed(lambda fn=fn: forward_backward(fn), device)[0])
    row = {"shape": list(shape), "groups": groups, "dtype": dtype_name}
    for name in contenders:
        row[name] = {key: statistics.median(values) for key, values in times[name].items()}
    return row


def markdown(rows: list[dict]) -> str:
    lines = [
        "| shape (B, N, C) | G | dtype | fwd triton / mean | fwd+bwd triton / mean "
        "| fwd, fwd+bwd torch ops / mean | fwd+bwd torch ops / triton |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m, t, o = r["mean"], r["triton"], r["torch"]
        lines.append(
            f"| {tuple(r['shape'])} | {r['groups']} | {r['dtype']} "
            f"| {t['fwd'] / m['fwd']:.2f}x ({t['fwd']:.3f} vs {m['fwd']:.3f} ms) "
            f"| {t['fwdbwd'] / m['fwdbwd']:.2f}x ({t['fwdbwd']:.3f} vs {m['fwdbwd']:.3f} ms) "
            f"| {o['fwd'] / m['fwd']:.2f}x, {o['fwdbwd'] / m['fwdbwd']:.2f}x "
            f"| {o['fwdbwd'] / t['fwdbwd']:.1f}x |"
        )
    return "\n".join(lines)


SECTIONS = ("train", "probe", "ggem", "ddp")


def _sizes(dry: bool) -> dict:
    """The model and sizes of the train, probe and ddp sections."""
    if dry:
        return {"model": "vit_tiny_patch16_224", "size": 32, "batch": 4, "images": 8,
                "kwargs": {"patch_size": 8, "embed_dim": 24, "depth": 1, "num_heads": 2}}
    return {"model": "vit_base_patch16_224", "size": 224, "batch": 128, "images": 128 * 40,
            "kwargs": {}}


def train_section(device, dry: bool, repeats: int) -> tuple[str, dict]:
    from bench_vision_train import markdown, measure

    z = _sizes(dry)
    result = measure(z["model"], size=z["size"], batch=z["batch"], images=z["images"],
                     repeats=repeats, device=device, amp="bf16", compile=not dry,
                     channels_last=True, model_kwargs=z["kwargs"])
    steps = (repeats + 1) * 2 * (z["images"] // z["batch"])
    return (f"### train: {z['model']} (GGeM head) at {z['size']}, batch {z['batch']}, bf16, "
            f"compile {not dry}, fused AdamW {device.type == 'cuda'}, channels-last; median "
            f"of {repeats} epochs of {z['images']} images each ({steps} steps in all)\n\n"
            + markdown(result)), result


def probe_section(device, dry: bool, repeats: int) -> str:
    import statistics
    import time

    import torch

    from poolwise.vision.models import create_model
    from poolwise.vision.probe import token_batch

    z = _sizes(dry)
    torch.manual_seed(0)
    model = create_model(z["model"], pool="avg", num_classes=0, img_size=z["size"],
                         **z["kwargs"]).to(device).eval()
    images = torch.randn(z["images"], 3, z["size"], z["size"])  # on the host, as loaded
    rates = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            start = time.perf_counter()
            for b in range(0, len(images), z["batch"]):
                tokens = token_batch(model, images[b:b + z["batch"]], device)
            rate = len(images) / (time.perf_counter() - start)
            if i:  # the first pass warms up
                rates.append(rate)
    return (f"### probe: the token pass of {z['model']} at {z['size']} (float32, batch "
            f"{z['batch']}, tokens {tuple(tokens.shape[1:])} to the host); median of "
            f"{repeats} passes over {z['images']} images\n\n| images/s |\n|---|\n"
            f"| {statistics.median(rates):.1f} |")


def _ddp_worker(rank: int, world: int, port: int, dry: bool, queue) -> None:
    import time

    import torch
    import torch.distributed as dist
    from torch import nn

    from poolwise.vision.models import create_model
    from poolwise.vision.train.engine import StepConfig, Trainer, data_parallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = not dry
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    z = _sizes(dry)
    torch.manual_seed(0)
    model = create_model(z["model"], pool="ggem", num_classes=10, img_size=z["size"],
                         **z["kwargs"]).to(device, memory_format=torch.channels_last)
    net = data_parallel(model, device, world)
    g = torch.Generator().manual_seed(rank)
    data = torch.randn(z["images"], 3, z["size"], z["size"], generator=g).to(device)
    labels = torch.randint(10, (z["images"],), generator=g).to(device)
    batches = [(data[s:s + z["batch"]], labels[s:s + z["batch"]])
               for s in range(0, z["images"], z["batch"])]
    trainer = Trainer(model, StepConfig(epochs=10, steps_per_epoch=len(batches), amp="bf16"),
                      device)
    loss_fn = nn.CrossEntropyLoss()

    def loss(n, b):
        return loss_fn(n(b[0]), b[1]), len(b[1])

    rates = []
    for epoch in range(3):
        dist.barrier()
        start = time.perf_counter()
        trainer.train_one_epoch(net, batches, len(batches), loss)
        if cuda:
            torch.cuda.synchronize(device)
        if epoch:
            rates.append(z["images"] / (time.perf_counter() - start))
    queue.put((rank, max(rates)))
    dist.destroy_process_group()


def ddp_section(device, dry: bool, single: float | None) -> str:
    import socket

    import torch
    import torch.multiprocessing as mp

    world = 2 if dry else torch.cuda.device_count()
    if world < 2:
        return ("### ddp\n\nskipped: this machine has one GPU (DDP over NCCL needs two or "
                "more)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(_ddp_worker, args=(world, port, dry, queue), nprocs=world, join=True,
                       start_method="spawn")
    rates = dict(queue.get() for _ in range(world))
    total = sum(rates.values())
    scaling = f"{total / single:.2f}x" if single else "n/a"
    backend = "gloo (CPU)" if dry else "NCCL"
    return (f"### ddp: the engine on {world} processes over {backend}, batch per process as in "
            f"train, bf16 (no compile)\n\n| processes | images/s in all | against the "
            f"train section's engine on one device |\n|---|---|---|\n"
            f"| {world} | {total:.1f} | {scaling} |")


def ggem_section(device, dry: bool, repeats: int) -> tuple:
    import torch
    from bench_pooling import SHAPES, group_counts

    from poolwise.kernels import ggem_triton

    if not ggem_triton.available():
        return 2, "### ggem\n\nskipped: Triton is not installed or POOLWISE_NATIVE=0 is set"
    import contextlib

    shapes = [(2, 9, 24)] if dry else SHAPES
    context = ggem_triton.interpreted() if dry else contextlib.nullcontext()
    with context:
        ready = ggem_triton.ready(device)
        check = "passed" if ready else f"FAILED ({ggem_triton.failure(device)})"
        print(f"first-use check of the Triton GGeM on {device}: {check}", flush=True)
        if not ready:
            return 1, f"### ggem\n\nthe first-use check FAILED on {device}: no table"
        rows = []
        for shape in shapes:
            for groups in group_counts(shape[-1]):
                for dtype in DTYPES:
                    rows.append(ggem_row(shape, groups, dtype, repeats, device))
                    print(f"measured {shape} G={groups} {dtype}", flush=True)
    import triton

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (interpreter)"
    return 0, (f"### ggem: GGeM (Triton) vs mean pooling on {name}, triton "
               f"{triton.__version__}; median of {repeats}; target fwd+bwd <= {TARGET}x mean"
               f"\n\n{markdown(rows)}"), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21,
                        help="repetitions of the GGeM timings (the train and probe sections "
                        "take at most 3)")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--json", help="also write the GGeM section's raw numbers to this file")
    parser.add_argument("--dry-run", "--interpret", dest="dry", action="store_true",
                        help="every section on the CPU with tiny shapes (GGeM through Triton's "
                        "interpreter, DDP over gloo): checks the script, not the speed")
    args = parser.parse_args(argv)
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown {', '.join(unknown)}; choose from "
                     f"{', '.join(SECTIONS)}")
    if args.dry:
        os.environ["TRITON_INTERPRET"] = "1"  # before torch imports Triton
    import torch

    if args.dry:
        device = torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            print("gpu_smoke: no CUDA device here (torch.cuda.is_available() is False); run it on "
                  "a GPU machine, or pass --dry-run for a dry run on the CPU", file=sys.stderr)
            return 2
        device = torch.device(args.device)
    import timm

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    print(f"## GPU smoke on {name}: torch {torch.__version__}, timm {timm.__version__}, "
          f"{platform.machine()}, {torch.cuda.device_count()} CUDA device(s)\n", flush=True)
    repeats = 1 if args.dry else min(3, args.repeats)
    status, single = 0, None
    for section in sections:
        if section == "train":
            text, result = train_section(device, args.dry, repeats)
            single = result["poolwise"]
        elif section == "probe":
            text = probe_section(device, args.dry, repeats)
        elif section == "ddp":
            text = ddp_section(device, args.dry, single)
        else:
            status, text, *rows = ggem_section(device, args.dry,
                                               1 if args.dry else args.repeats)
            if args.json and rows:
                with open(args.json, "w") as f:
                    json.dump(rows[0], f, indent=1)
        print(text + "\n", flush=True)
    return 0 if status in (0, 2) else status


if __name__ == "__main__":
    sys.exit(main())
