"""L-SFAN's four convolutions, one at a time: oneDNN (NCHW and channels-last) against poolwise's
C++ direct convolution, forward and backward, at batch 40 and 1 thread (one fold process).

Every contender takes and returns NCHW maps, as in the CNN: the channels-last column includes
the conversions, as poolwise's oneDNN fallback (``conv2d_in_layout``) runs them.
The backward is what training needs: weight and bias gradients everywhere, the input gradient
from the second convolution on. Times are medians of interleaved repetitions; the last column is
oneDNN's better layout over the direct kernel.

    python benchmarks/bench_conv.py [--repeats 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from poolwise.kernels import conv as native

BATCH = 40
# (input channels, output channels, input height) of L-SFAN's convolutions; width 30, padding (0, 1)
LAYERS = [(1, 2, 180), (2, 4, 178), (4, 8, 88), (8, 16, 86)]
PADDING = [0, 1]


def onednn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, channels_last: bool):
    """oneDNN as ``poolwise::conv2d_in_layout`` runs it: NCHW in and out, the conversions to and
    from the layout inside the timing."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    grad = torch.ones_like(F.conv2d(x, w, b, padding=PADDING))

    def forward():
        F.conv2d(x.contiguous(memory_format=fmt), w, b, padding=PADDING).contiguous()

    def backward():
        grads = torch.ops.aten.convolution_backward(
            grad.contiguous(memory_format=fmt), x.contiguous(memory_format=fmt), w,
            [w.shape[0]], [1, 1], PADDING, [1, 1], False, [0, 0], 1,
            [x.shape[1] > 1, True, True],
        )
        if grads[0] is not None:
            grads[0].contiguous()

    return forward, backward


def direct(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor):
    grad = torch.ones(native.conv2d_direct(x, w, b, PADDING).shape)

    def forward():
        native.conv2d_direct(x, w, b, PADDING)

    def backward():
        native.conv2d_direct_backward(grad, x, w, PADDING, x.shape[1] > 1)

    return forward, backward


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if native.library() is None:
        raise SystemExit("the C++ convolution could not be built here (see the warning above)")
    print(f"batch {BATCH}, {args.threads} thread(s), median of {args.repeats}; ms\n")
    print("| conv | pass | oneDNN NCHW | oneDNN NHWC | direct (C++) | best oneDNN / direct |")
    print("|---|---|---|---|---|---|")
    totals = [0.0, 0.0, 0.0, 0.0]  # NCHW, channels-last, direct, better oneDNN layout per row
    for cin, cout, height in LAYERS:
        g = torch.Generator().manual_seed(cin)
        x = torch.randn(BATCH, cin, height, 30, generator=g)
        w, b = torch.randn(cout, cin, 3, 3, generator=g), torch.randn(cout, generator=g)
        contenders = [onednn(x, w, b, False), onednn(x, w, b, True), direct(x, w, b)]
        for p, name in enumerate(("forward", "backward")):
            runs = [[] for _ in contenders]
            for _ in range(args.repeats):  # interleaved, so drift hits every contender alike
                for i, fns in enumerate(contenders):
                    runs[i].append(median_ms(fns[p], 1))
            ms = [sorted(r)[len(r) // 2] for r in runs]
            totals = [t + m for t, m in zip(totals, [*ms, min(ms[:2])], strict=True)]
            print(f"| {cin} -> {cout} | {name} | {ms[0]:.2f} | {ms[1]:.2f} | {ms[2]:.2f} "
                  f"| {min(ms[:2]) / ms[2]:.2f}x |")
    print(f"| all | both | {totals[0]:.1f} | {totals[1]:.1f} | {totals[2]:.1f} "
          f"| {totals[3] / totals[2]:.2f}x (better layout per row: {totals[3]:.1f}) |")


if __name__ == "__main__":
    main()
