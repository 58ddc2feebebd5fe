"""GGeM speed and memory, measured side by side against plain ``mean``, the plain-ops
formulation (``ggem_reference``: clamp, amax, div, pow, mean) and GGeM's PyTorch-ops kernel
(``torch ops``: the path without the native library).

Each repetition times the three contenders back to back, so machine noise hits them alike; the
table reports medians as ratios to ``mean`` with absolute milliseconds beside them, and the bytes
each one saves for backward beyond its input (counted with saved-tensor hooks), and the minor
page faults of one forward+backward of ``mean`` and ``ggem`` (median): a baseline that gets its
gradient from fresh memory pays them, one that reuses freed memory does not.

Targets, with ``--reuse-memory``: forward within 2x of mean, forward+backward within 2.5x;
saved memory beyond the input at most 2*B*C values. The native build's instruction set is
printed; ``POOLWISE_CPU_ISA=avx2`` measures the AVX2 build on an AVX-512 machine.

    python benchmarks/bench_pooling.py            # full table (CPU, a few minutes)
    python benchmarks/bench_pooling.py --quick    # one shape, fewer repeats
    python benchmarks/bench_pooling.py --reuse-memory   # no fresh memory: arithmetic alone
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import resource
import statistics
import time
from collections.abc import Callable

import torch

from poolwise import kernels
from poolwise.kernels import build
from poolwise.pooling import ggem, ggem_reference

SHAPES = [(64, 196, 768), (32, 49, 2048), (8, 1024, 1024)]


def group_counts(channels: int) -> list[int]:
    return [1, 12 if channels % 12 == 0 else 8, channels]


def saved_bytes(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> int:
    """Bytes saved for backward by ``fn(x)``, not counting tensors that share x's storage."""
    seen: dict[int, int] = {}
    base = x.untyped_storage().data_ptr()

    def pack(t: torch.Tensor):
        ptr = t.untyped_storage().data_ptr()
        if ptr != base:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(seen.values())


def keep_freed_memory() -> None:
    """Asks glibc's malloc to serve every allocation from memory it already holds and never to
    hand freed memory back, so no contender pays page faults for a fresh gradient: the ratios
    then compare the arithmetic alone. Linux with glibc only."""
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameter numbers in <malloc.h>
    if not (libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 1 << 30)):
        raise OSError("glibc's mallopt refused the thresholds")


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, int]:
    """Milliseconds, and the minor page faults the call took (fresh memory from the OS)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = (time.perf_counter() - start) * 1e3
    return elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def torch_ops(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    with kernels.use_native(False):
        return ggem(x, p)


def bench_case(shape, groups, repeats, device):
    torch.manual_seed(0)
    batch, _, channels = shape
    x = torch.randn(shape, device=device).abs().requires_grad_()
    p = torch.full((groups,), 3.0, device=device, requires_grad=True)
    contenders = {
        "mean": lambda t: t.mean(1),
        "plain": lambda t: ggem_reference(t, p),
        "ggem": lambda t: ggem(t, p),
        "torch": lambda t: torch_ops(t, p),
    }
    times = {name: {"fwd": [], "fwdbwd": [], "faults": []} for name in contenders}

    def forward(fn):
        with torch.no_grad():
            fn(x)

    def forward_backward(fn):
        x.grad, p.grad = None, None
        fn(x).sum().backward()

    for fn in contenders.values():  # warm-up
        forward(fn)
        forward_backward(fn)
    for _ in range(repeats):
        for name, fn in contenders.items():
            times[name]["fwd"].append(timed(lambda fn=fn: forward(fn), device)[0])
            ms, faults = timed(lambda fn=fn: forward_backward(fn), device)
            times[name]["fwdbwd"].append(ms)
            times[name]["faults"].append(faults)
    row = {"shape": list(shape), "groups": groups}
    for name, fn in contenders.items():
        row[name] = {
            "fwd_ms": statistics.median(times[name]["fwd"]),
            "fwdbwd_ms": statistics.median(times[name]["fwdbwd"]),
            "fwdbwd_page_faults": statistics.median(times[name]["faults"]),
            "saved_mib": saved_bytes(fn, x) / 2**20,
        }
    row["limit_saved_mib"] = 2 * batch * channels * 4 / 2**20
    return row


def ratio(row, name, key):
    return row[name][key] / row["mean"][key]


def markdown(rows) -> str:
    lines = [
        "| shape (B, N, C) | G | fwd ggem / mean | fwd+bwd ggem / mean "
        "| fwd, fwd+bwd torch ops / mean | fwd+bwd plain / mean "
        "| fwd+bwd plain / ggem | saved MiB ggem (limit) | saved MiB plain "
        "| page faults fwd+bwd mean / ggem |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        g, m, pl = r["ggem"], r["mean"], r["plain"]
        lines.append(
            f"| {tuple(r['shape'])} | {r['groups']} "
            f"| {ratio(r, 'ggem', 'fwd_ms'):.2f}x ({g['fwd_ms']:.1f} vs {m['fwd_ms']:.1f} ms) "
            f"| {ratio(r, 'ggem', 'fwdbwd_ms'):.2f}x ({g['fwdbwd_ms']:.1f} vs "
            f"{m['fwdbwd_ms']:.1f} ms) "
            f"| {ratio(r, 'torch', 'fwd_ms'):.2f}x, {ratio(r, 'torch', 'fwdbwd_ms'):.2f}x "
            f"| {ratio(r, 'plain', 'fwdbwd_ms'):.1f}x ({pl['fwdbwd_ms']:.1f} ms) "
            f"| {pl['fwdbwd_ms'] / g['fwdbwd_ms']:.1f}x "
            f"| {g['saved_mib']:.2f} ({r['limit_saved_mib']:.2f}) | {pl['saved_mib']:.1f} "
            f"| {m['fwdbwd_page_faults']:.0f} / {g['fwdbwd_page_faults']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="first shape only, 5 repeats")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the raw numbers to this file")
    parser.add_argument(
        "--reuse-memory",
        action="store_true",
        help="keep freed memory in the process (glibc), so no fwd+bwd pays page faults",
    )
    args = parser.parse_args()
    if args.reuse_memory:
        keep_freed_memory()
    device = torch.device(args.device)
    shapes = SHAPES[:1] if args.quick else SHAPES
    repeats = 5 if args.quick else args.repeats
    rows = []
    for shape in shapes:
        for groups in group_counts(shape[-1]):
            rows.append(bench_case(shape, groups, repeats, device))
            print(f"measured {shape} G={groups}", flush=True)
    memory = "; freed memory kept (--reuse-memory)" if args.reuse_memory else ""
    native = build.instruction_set() if kernels.available() else "not built (torch ops)"
    print(
        f"\nGGeM vs mean pooling, float32, {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"native kernel: {native}; "
        f"median of {repeats}{memory}\n"
    )
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
