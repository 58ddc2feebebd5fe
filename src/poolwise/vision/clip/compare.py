"""Pools x seeds for CLIP-style training: :func:`~poolwise.vision.compare.run_grid` over
:func:`run_clip` run folders, then a table, verdicts and a plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from poolwise._io import write_json, write_text
from poolwise.vision.clip.train import ClipSpec, run_clip
from poolwise.vision.compare import pool_table, run_grid, summarise_pools, verdicts
from poolwise.vision.compare_plots import plot_metrics

KEYS = ("image->text R@1", "image->text R@5", "text->image R@1", "text->image R@5",
        "zero-shot accuracy")
METRICS = tuple((key, f"{key} (%)", 100.0) for key in KEYS)
HEADLINE = ("image->text R@1", "text->image R@1", "zero-shot accuracy")


def run_clip_compare(out: str | Path, base: ClipSpec, pools: Sequence[str],
                     seeds: Sequence[int], **kwargs: Any) -> list[dict]:
    """The pools x seeds grid of CLIP runs (:func:`poolwise.vision.compare.run_grid`, whose
    keywords it takes: ``jobs`` or ``launch``, ``on_cell``, ``on_status``)."""
    return run_grid(out, base, pools, seeds, run_clip, **kwargs)


def write_clip_report(out: str | Path, results: Sequence[dict], command: str) -> Path:
    """clip_compare.md (setup, table, verdicts), clip_compare.json, clip_compare.png."""
    out = Path(out)
    rows = summarise_pools(results, METRICS)
    spec = results[0]["spec"]
    lines = [
        "# CLIP-style pooling comparison", "", f"Command: `{command}`", "",
        f"Data: `{spec['data']}` ({results[0]['test_images']:,} test images, "
        f"{results[0]['test_captions']} distinct captions); model "
        f"`{spec['model'] or 'built-in tiny dual encoder'}`"
        + ("" if spec["model"] else f" {json.dumps(spec['config'])}")
        + f", {results[0]['parameters']:,} parameters; {spec['epochs']} epochs, batch "
        f"{spec['batch_size']}, lr {spec['lr']}.", "",
        "Mean ± std over seeds (ddof 1). image->text R@K: an image's hit is any of its "
        "captions in the top K; text->image R@K: a caption's hit is any image it describes.", "",
        pool_table(rows, METRICS),
    ]
    found = {k: verdicts(results, k, metrics=METRICS) for k in HEADLINE}
    lines += ["", "## Verdict", "",
              "GGeM against every other pool, paired by seed (difference of the means, 95 % t "
              "interval, paired t-test at 0.05).", "",
              *(f"- {v['text']}" for k in HEADLINE for v in found[k]), "",
              "![metrics](clip_compare.png)", ""]
    write_text(out / "clip_compare.md", "\n".join(lines))
    write_json(out / "clip_compare.json", {"command": command, "rows": rows,
                                           "verdict": found})
    plot_metrics(out / "clip_compare.png", rows, [m for m in METRICS if m[0] in HEADLINE])
    return out / "clip_compare.md"
