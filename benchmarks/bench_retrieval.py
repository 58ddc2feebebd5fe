"""Exact k-NN retrieval metrics (Recall@K, R-precision, mAP@R) on random embeddings: wall
time and peak memory of :func:`poolwise.vision.retrieval.metrics.retrieval_metrics`, every query
against all the others, or (``--gallery``) N queries against a separate gallery.

    python benchmarks/bench_retrieval.py [--n 100000] [--dim 64] [--classes 100] [--threads 1]
    python benchmarks/bench_retrieval.py --n 10000 --gallery 1000000 --classes 10000
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import torch

from poolwise.vision.retrieval.metrics import retrieval_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="embeddings (each a query)")
    parser.add_argument("--dim", type=int, default=64, help="embedding dimension")
    parser.add_argument("--classes", type=int, default=100, help="classes, equally frequent")
    parser.add_argument("--gallery", type=int, default=0,
                        help="a separate gallery of this many embeddings (0: queries only)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--pml", action="store_true",
                        help="also time pytorch-metric-learning's AccuracyCalculator (exact "
                        "cosine k-NN) on the same embeddings, after poolwise")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(args.classes, args.dim, generator=generator)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % args.classes
        return centres[labels] + 2.0 * torch.randn(n, args.dim, generator=generator), labels

    embeddings, labels = draw(args.n)
    extra = {}
    if args.gallery:
        gallery, gallery_labels = draw(args.gallery)
        extra = {"gallery": gallery, "gallery_labels": gallery_labels}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    metrics = retrieval_metrics(embeddings, labels, **extra)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s)")
    against = f" against a gallery of {args.gallery:,}" if args.gallery else ""
    print(f"{args.n:,} embeddings of {args.dim} dimensions in {args.classes} classes{against}: "
          f"{seconds:.1f} s, peak memory {peak / 2**20:.2f} GiB "
          f"({(peak - before) / 2**20:.2f} GiB above the inputs)")
    print(", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    if args.pml:
        from pytorch_metric_learning.distances import CosineSimilarity
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
        from pytorch_metric_learning.utils.inference import CustomKNN

        calc = AccuracyCalculator(include=("precision_at_1", "r_precision",
                                           "mean_average_precision_at_r"),
                                  knn_func=CustomKNN(CosineSimilarity(), batch_size=512))
        reference = extra.get("gallery", embeddings)
        reference_labels = extra.get("gallery_labels", labels)
        start = time.perf_counter()
        theirs = calc.get_accuracy(embeddings, labels, reference, reference_labels,
                                   ref_includes_query=not args.gallery)
        pml_seconds = time.perf_counter() - start
        print(f"pytorch-metric-learning AccuracyCalculator: {pml_seconds:.1f} s "
              f"({pml_seconds / seconds:.2f}x poolwise's time); precision_at_1 "
              f"{theirs['precision_at_1']:.4f}, r_precision {theirs['r_precision']:.4f}, "
              f"mean_average_precision_at_r {theirs['mean_average_precision_at_r']:.4f}")


if __name__ == "__main__":
    main()
