"""GPU smoke run: the fused Triton GGeM against ``mean`` and against GGeM's PyTorch-ops path on a
CUDA device, forward and forward + backward, in float32 and bfloat16, printed as one Markdown
table of medians (ratios to ``mean`` beside the milliseconds; each repetition times the
contenders back to back). The target is forward + backward <= 1.5x ``mean``.

It first reports the kernel's first-use check on the device (passed, or the reason it fell
back), so a table is never read as Triton's when the PyTorch-ops path ran. A few minutes on one
GPU at the default repeats.

    python benchmarks/gpu_smoke.py                      # cuda:0, bench_pooling.py's shapes
    python benchmarks/gpu_smoke.py --repeats 5 --json gpu.json

Without a CUDA device it says so and exits with status 2. ``--interpret`` runs the same table on
CPU tensors through Triton's interpreter (tiny shapes; it checks the script, not the speed).
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--json", help="also write the raw numbers to this file")
    parser.add_argument("--interpret", action="store_true",
                        help="CPU tensors through Triton's interpreter, tiny shapes (a dry run)")
    args = parser.parse_args(argv)
    if args.interpret:
        os.environ["TRITON_INTERPRET"] = "1"  # before torch imports Triton
    import torch
    from bench_pooling import SHAPES, group_counts

    from poolwise.kernels import ggem_triton

    if args.interpret:
        device, shapes, context = torch.device("cpu"), [(2, 9, 24)], ggem_triton.interpreted()
    else:
        if not torch.cuda.is_available():
            print("gpu_smoke: no CUDA device here (torch.cuda.is_available() is False); run it on "
                  "a GPU machine, or pass --interpret for a dry run on the CPU", file=sys.stderr)
            return 2
        device, shapes = torch.device(args.device), SHAPES
        import contextlib

        context = contextlib.nullcontext()
    if not ggem_triton.available():
        print("gpu_smoke: Triton is not installed or POOLWISE_NATIVE=0 is set", file=sys.stderr)
        return 2
    with context:
        ready = ggem_triton.ready(device)
        check = "passed" if ready else f"FAILED ({ggem_triton.failure(device)})"
        print(f"first-use check of the Triton GGeM on {device}: {check}", flush=True)
        if not ready:
            return 1
        rows = []
        for shape in shapes:
            for groups in group_counts(shape[-1]):
                for dtype in DTYPES:
                    rows.append(ggem_row(shape, groups, dtype, args.repeats, device))
                    print(f"measured {shape} G={groups} {dtype}", flush=True)
    import triton

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (interpreter)"
    print(f"\nGGeM (Triton) vs mean pooling on {name}, torch {torch.__version__}, triton "
          f"{triton.__version__}, {platform.machine()}; median of {args.repeats}; target "
          f"fwd+bwd <= {TARGET}x mean\n")
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
