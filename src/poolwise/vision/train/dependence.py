"""Head-wise dependence: how much the pooled features of different head groups share.

The pooled embedding (N images, C channels) is split into G contiguous groups of C/G channels,
one per attention head (the multi-head split of the last block). For each pair of groups the
linear CKA (Kornblith et al., 2019) is

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F * ||Y^T Y||_F),   X, Y column-centred,

which is 1 for groups that are linear, isotropically scaled, rotated copies of each other and
near 0 for independent groups. The mean over the G(G-1)/2 pairs is the head-wise dependence.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from poolwise._io import write_json, write_text


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA between two feature matrices with the same rows (N, Dx), (N, Dy)."""
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"expected (N, Dx) and (N, Dy), got {tuple(x.shape)}, {tuple(y.shape)}")
    x = x.double() - x.double().mean(dim=0)
    y = y.double() - y.double().mean(dim=0)
    cross = (y.T @ x).square().sum()
    norm = (x.T @ x).square().sum().sqrt() * (y.T @ y).square().sum().sqrt()
    if norm == 0:
        raise ValueError("a feature group is constant over the samples; CKA is undefined")
    return float(cross / norm)


def group_dependence(features: Tensor, groups: int) -> dict[str, object]:
    """Pairwise linear CKA between the G contiguous channel groups of ``features`` (N, C).

    Returns ``{"mean": m, "max": ..., "matrix": GxG list}`` (diagonal 1).
    """
    n, c = features.shape
    if groups < 2 or c % groups:
        raise ValueError(f"need groups >= 2 dividing C={c}, got {groups}")
    parts = features.reshape(n, groups, c // groups).unbind(dim=1)
    matrix = [[1.0] * groups for _ in range(groups)]
    pairs = []
    for a in range(groups):
        for b in range(a + 1, groups):
            value = linear_cka(parts[a], parts[b])
            matrix[a][b] = matrix[b][a] = value
            pairs.append(value)
    return {"mean": sum(pairs) / len(pairs), "max": max(pairs), "matrix": matrix}


def find_run_folders(paths: list[str]) -> list[Path]:
    """The run folders (holding ``run.json``) given, or one level below each path given.

    Raises:
        FileNotFoundError: naming a path with no run folder at it or one level down.
    """
    runs = []
    for run in paths:
        path = Path(run)
        found = [path] if (path / "run.json").exists() else sorted(
            p.parent for p in path.glob("*/run.json"))
        if not found:
            raise FileNotFoundError(f"{run}: no run folder (run.json) here or one level down")
        runs.extend(found)
    return runs


def dependence_table(rows: list[dict]) -> str:
    """A Markdown table of :func:`~poolwise.vision.train.classification.run_dependence` rows."""
    lines = ["| run | pool | seed | groups | mean CKA between groups | max |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['pool']} | {r['seed']} | {r['groups']} | {r['mean']:.4f} | "
              f"{r['max']:.4f} |" for r in rows]
    return "\n".join(lines)


def write_dependence_report(out: str | Path, rows: list[dict]) -> Path:
    """``dependence.md`` (the table) and ``dependence.json`` (the rows) in ``out``."""
    out = Path(out)
    write_text(out / "dependence.md", "# Head-wise dependence\n\n" + dependence_table(rows)
               + "\n")
    write_json(out / "dependence.json", rows)
    return out / "dependence.md"
