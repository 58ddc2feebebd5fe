"""Exact k-NN retrieval metrics (Recall@K, R-precision, mAP@R) on N random embeddings: wall
time and peak memory of :func:`poolwise.vision.retrieval.retrieval_metrics`, every query
against all the others.

    python benchmarks/bench_retrieval.py [--n 100000] [--dim 64] [--classes 100] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import torch

from poolwise.vision.retrieval import retrieval_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="embeddings (each a query)")
    parser.add_argument("--dim", type=int, default=64, help="embedding dimension")
    parser.add_argument("--classes", type=int, default=100, help="classes, equally frequent")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(args.n) % args.classes
    centres = torch.randn(args.classes, args.dim, generator=generator)
    embeddings = centres[labels] + 2.0 * torch.randn(args.n, args.dim, generator=generator)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    metrics = retrieval_metrics(embeddings, labels)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s)")
    print(f"{args.n:,} embeddings of {args.dim} dimensions in {args.classes} classes: "
          f"{seconds:.1f} s, peak memory {peak / 2**20:.2f} GiB "
          f"({(peak - before) / 2**20:.2f} GiB above the inputs)")
    print(", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))


if __name__ == "__main__":
    main()
