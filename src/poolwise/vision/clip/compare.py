"""Pools x seeds for CLIP-style training: one :func:`run_clip` folder per cell, then a table."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from poolwise._io import atomic_path, write_json, write_text
from poolwise.vision.clip.train import ClipSpec, run_clip

METRICS = ("image->text R@1", "image->text R@5", "text->image R@1", "text->image R@5",
           "zero-shot accuracy")


def _cell(spec_json: dict, run_dir: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    return run_clip(ClipSpec(**spec_json), run_dir)


def run_clip_compare(out: str | Path, base: ClipSpec, pools: Sequence[str],
                     seeds: Sequence[int], *, jobs: int = 1,
                     on_cell: Callable[[str, int, dict], None] | None = None) -> list[dict]:
    out = Path(out)
    cells = [(p, s) for p in pools for s in seeds]
    specs = {c: dataclasses.replace(base, pool=c[0], seed=c[1]) for c in cells}
    results: dict = {}
    if jobs <= 1:
        for c in cells:
            results[c] = run_clip(specs[c], out / f"{c[0]}-seed{c[1]}")
            if on_cell:
                on_cell(*c, results[c])
    else:
        import multiprocessing

        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
            futures = {ex.submit(_cell, specs[c].to_json(), str(out / f"{c[0]}-seed{c[1]}"),
                                 threads): c for c in cells}
            for future in as_completed(futures):
                c = futures[future]
                results[c] = future.result()
                if on_cell:
                    on_cell(*c, results[c])
    return [results[c] for c in cells]


def summarise(results: Sequence[dict]) -> list[dict]:
    rows: dict[str, dict] = {}
    for r in results:
        pool = r["spec"]["pool"]
        rows.setdefault(pool, {"pool": pool, "runs": []})["runs"].append(r)
    out = []
    for pool, row in rows.items():
        entry = {"pool": pool, "seeds": [r["spec"]["seed"] for r in row["runs"]]}
        for key in METRICS:
            values = [100 * r[key] for r in row["runs"] if r.get(key) is not None]
            entry[key] = {"mean": float(np.mean(values)) if values else None,
                          "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                          "values": values}
        ps = [r["p"] for r in row["runs"] if r.get("p")]
        entry["p"] = np.mean(ps, axis=0).tolist() if ps else None
        out.append(entry)
    return out


def verdict(rows: Sequence[dict], key: str, pool: str = "ggem") -> str:
    mine = next((r for r in rows if r["pool"] == pool), None)
    others = [r for r in rows if r["pool"] != pool and r[key]["mean"] is not None]
    if mine is None or not others:
        return f"{key}: no {pool} result to compare"
    best = max(others, key=lambda r: r[key]["mean"])
    diff = mine[key]["mean"] - best[key]["mean"]
    spread = max(s for s in (mine[key]["std"], best[key]["std"], 0.0) if s is not None)
    if spread == 0:
        how = "no seed spread to compare with"
    elif abs(diff) <= spread:
        how = f"within the seed-to-seed spread (std up to {spread:.2f}): no clear difference"
    else:
        how = (f"beyond the seed-to-seed spread (std up to {spread:.2f}): {pool} is "
               + ("ahead" if diff > 0 else "behind"))
    return (f"{key} (%): {pool} {mine[key]['mean']:.2f} vs the best other pool, {best['pool']}, "
            f"{best[key]['mean']:.2f}; difference {diff:+.2f}, {how}.")


def write_clip_report(out: str | Path, results: Sequence[dict], command: str) -> Path:
    out = Path(out)
    rows = summarise(results)
    spec = results[0]["spec"]

    def fmt(c: dict) -> str:
        if c["mean"] is None:
            return "n/a"
        return f"{c['mean']:.2f}" + ("" if c["std"] is None else f" ± {c['std']:.2f}")

    lines = [
        "# CLIP-style pooling comparison", "", f"Command: `{command}`", "",
        f"Data: `{spec['data']}` ({results[0]['test_images']:,} test images, "
        f"{results[0]['test_captions']} distinct captions); model "
        f"`{spec['model'] or 'built-in tiny dual encoder'}`"
        + ("" if spec["model"] else f" {json.dumps(spec['config'])}")
        + f", {results[0]['parameters']:,} parameters; {spec['epochs']} epochs, batch "
        f"{spec['batch_size']}, lr {spec['lr']}.", "",
        "Mean ± std over seeds (ddof 1), in %. image->text R@K: an image's hit is any of its "
        "captions in the top K; text->image R@K: a caption's hit is any image it describes.", "",
        "| pool | seeds | " + " | ".join(METRICS) + " | learned p |",
        "|" + "---|" * (len(METRICS) + 3),
    ]
    for r in rows:
        p = "—" if not r["p"] else ", ".join(f"{v:.2f}" for v in r["p"])
        lines.append(f"| {r['pool']} | {len(r['seeds'])} | "
                     + " | ".join(fmt(r[k]) for k in METRICS) + f" | {p} |")
    keys = ("image->text R@1", "text->image R@1", "zero-shot accuracy")
    lines += ["", "## Verdict", "", *(f"- {verdict(rows, k)}" for k in keys), "",
              "![metrics](clip_compare.png)", ""]
    write_text(out / "clip_compare.md", "\n".join(lines))
    write_json(out / "clip_compare.json", {"command": command, "rows": rows})
    _plot(out, rows)
    return out / "clip_compare.md"


def _plot(out: Path, rows: Sequence[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("image->text R@1", "text->image R@1", "zero-shot accuracy")
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4))
    for ax, key in zip(axes, keys, strict=True):
        for i, r in enumerate(rows):
            if r[key]["mean"] is None:
                continue
            ax.bar(i, r[key]["mean"], yerr=r[key]["std"] or 0, capsize=4, alpha=0.7,
                   color="C3" if r["pool"] == "ggem" else "C0")
            ax.plot([i] * len(r[key]["values"]), r[key]["values"], "k.", ms=4)
        ax.set_xticks(range(len(rows)), [r["pool"] for r in rows], rotation=30)
        ax.set_title(key + " (%)", fontsize=10)
        values = [v for r in rows for v in r[key]["values"]]
        if values:
            pad = max(0.5, 0.5 * (max(values) - min(values)))
            ax.set_ylim(min(values) - pad, max(values) + pad)
    fig.tight_layout()
    with atomic_path(out / "clip_compare.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
