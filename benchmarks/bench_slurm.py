"""What the SLURM launcher adds per cell: a grid of tiny cells run in this process, by the local
process pool and as a SLURM job array, side by side in one run.

Each cell computes a small matrix product (milliseconds), so the wall time is the launcher's
own cost: submission, scheduling, a Python process per array element that imports torch, and
the polling of the queue. Uses the cluster that ``SLURM_CONF`` (or SLURM's default
configuration) points at; with ``--local-cluster`` it starts the one-node localhost cluster of
the tests (``tests/_slurm.py``: needs root, Debian's slurm-wlm and munge) and stops it after.

    python benchmarks/bench_slurm.py [--cells 20] [--local-cluster] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from poolwise.runs import Cell, Grid, InProcess, LocalPool
from poolwise.runs.slurm import SlurmExecutor, SlurmOptions


def tiny_cell(shared: dict, k: int) -> float:
    import torch

    g = torch.Generator().manual_seed(k)
    a = torch.randn(shared["n"], shared["n"], generator=g)
    return float((a @ a.T).trace())


def timed(executor, grid: Grid) -> tuple[float, dict]:
    start = time.perf_counter()
    results = executor.run(grid)
    return time.perf_counter() - start, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=20)
    parser.add_argument("--local-cluster", action="store_true",
                        help="start the tests' one-node localhost cluster for the run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    cluster = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.local_cluster:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            import _slurm

            reason = _slurm.missing()
            if reason:
                raise SystemExit(f"cannot start the local cluster: {reason}")
            cluster = _slurm.start(Path(tmp) / "cluster")
            os.environ["SLURM_CONF"] = cluster.env["SLURM_CONF"]
        # the array elements import this file's tiny_cell
        here = str(Path(__file__).resolve().parent)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (here, os.environ.get("PYTHONPATH")) if p)
        sys.path.insert(0, here)
        from bench_slurm import tiny_cell as cell_fn  # the importable name, not __main__'s

        try:
            grid = Grid(cell_fn, {"n": 64}, [Cell(f"c{k}", (k,)) for k in range(args.cells)])
            rows = []
            for name, executor in (
                    ("in process", InProcess()),
                    ("local pool, 2 processes", LocalPool(2, 1)),
                    ("SLURM job array", SlurmExecutor(
                        Path(tmp) / "jobs", SlurmOptions(cpus_per_task=1, gpus_per_task=0,
                                                         time_min=10), poll_s=0.5))):
                seconds, results = timed(executor, grid)
                rows.append({"executor": name, "seconds": seconds, "results": results})
        finally:
            if cluster is not None:
                cluster.stop()

    assert all(r["results"] == rows[0]["results"] for r in rows), "executors disagree"
    base = rows[0]["seconds"]
    print(f"{args.cells} cells of a 64 x 64 matrix product; torch {__import__('torch').__version__}"
          f", {os.cpu_count()} CPUs")
    print("| executor | wall (s) | per cell (s) | x in process |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['executor']} | {r['seconds']:.2f} | {r['seconds'] / args.cells:.3f} | "
              f"{r['seconds'] / base:.1f} |")
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in r.items() if k != "results"}
                                         for r in rows], indent=2))


if __name__ == "__main__":
    main()
