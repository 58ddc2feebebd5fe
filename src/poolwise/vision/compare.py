"""The pools x seeds comparison: one run per cell, then tables, paired verdicts and plots.

Two tasks (``TASKS``): ``classification`` trains on every class and scores the test
images (top-1, and retrieval among them); ``retrieval`` is class-disjoint
(:func:`~poolwise.vision.retrieval.run.run_retrieval`: train on some classes, retrieve
images of the others). Each cell is an ordinary run folder (``OUT/<pool>-seed<seed>/``), so a
killed grid resumes cell by cell and epoch by epoch.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from poolwise._deprecate import renamed_keyword
from poolwise._io import write_json, write_text
from poolwise._tables import markdown_table, mean_std
from poolwise.runs import Cell, Grid, Launch, ordered
from poolwise.stats import paired_comparison, summarise
from poolwise.vision.compare_plots import curve_lines, plot_report

if TYPE_CHECKING:
    from poolwise.vision.train.spec import RunSpec

METRICS = (  # key in result.json, column title, scale
    ("accuracy", "top-1 accuracy (%)", 100.0),
    ("recall@1", "Recall@1 (%)", 100.0),
    ("map@r", "mAP@R (%)", 100.0),
    ("dependence", "head dependence (CKA)", 1.0),
)
RETRIEVAL_METRICS = (  # the same, for the class-disjoint cells of run_retrieval_cell
    ("recall@1", "unseen Recall@1 (%)", 100.0),
    ("r_precision", "unseen R-precision (%)", 100.0),
    ("map@r", "unseen mAP@R (%)", 100.0),
    ("seen_map@r", "seen mAP@R (%)", 100.0),
)


def cell_dir(out: Path, pool: str, seed: int) -> Path:
    return Path(out) / f"{pool}-seed{seed}"


def _run_cell(shared: tuple, spec: Any, run_dir: str,
              on_epoch: Callable[[dict], None] | None = None) -> dict:
    runner, log_to = shared
    return runner(spec, run_dir, on_epoch=on_epoch, log_to=log_to)


def run_grid(
    out: str | Path,
    base: Any,
    pools: Sequence[str],
    seeds: Sequence[int],
    runner: Callable[..., dict],
    *,
    jobs: int = 1,
    launch: Launch | None = None,
    on_cell: Callable[[str, int, dict], None] | None = None,
    on_epoch: Callable[[str, int, dict], None] | None = None,
    on_status: Callable[[dict[str, int]], None] | None = None,
    log_to: Sequence[str] = (),
) -> list[dict]:
    """Runs ``runner(spec, run_dir, on_epoch=..., log_to=...)`` for every (pool, seed) cell,
    ``jobs`` processes at a time (:func:`poolwise.runs.local_executor`; ``runner`` must be a
    module-level function, the spec a picklable dataclass), or as ``launch`` says (SLURM
    included: ``on_status`` hears the counts of pending / running / done / failed cells), and
    returns the results in (pool, seed) order."""
    launch = Launch.of(launch, jobs)
    out = Path(out)
    cells = {}
    for pool in pools:
        for seed in seeds:
            name = cell_dir(out, pool, seed).name
            if name in cells:
                raise ValueError(f"pool {pool!r} with seed {seed} is asked for twice; name each "
                                 "pool and each seed once")
            cells[name] = (pool, seed)
    grid = Grid(_run_cell, (runner, tuple(log_to)), [
        Cell(name, (dataclasses.replace(base, pool=pool, seed=seed), str(out / name)))
        for name, (pool, seed) in cells.items()])

    def live(cell: Cell) -> dict:
        pool, seed = cells[cell.name]
        return {"on_epoch": None if on_epoch is None else
                (lambda r, p=pool, s=seed: on_epoch(p, s, r))}

    def finished(cell: Cell, result: dict) -> None:
        if on_cell is not None:
            on_cell(*cells[cell.name], result)

    executor = launch.executor(out, on_status=on_status)
    return ordered(grid, executor.run(grid, on_result=finished, live=live))


def retrieval_record(result: dict) -> dict:
    """A :func:`run_retrieval` result (``retrieval.json``) flattened like a classification
    result: ``retrieval`` holds the unseen classes' metrics, ``seen_map@r`` the seen classes'
    mAP@R, and the training run's parameters, p and time sit at the top (the rest stays in
    the cell's retrieval.json)."""
    seen = result.get("seen") or {}
    return {"spec": result["spec"], **result["training"], "layout": result["layout"],
            "retrieval": result["unseen"], "seen_map@r": seen.get("map@r"),
            "unseen_classes": result["unseen_classes"], "seen_classes": result["seen_classes"]}


def run_classification_cell(spec: RunSpec, run_dir: str | Path, **kwargs: Any) -> dict:
    """One classification cell: :func:`run_classification` (imported when a cell runs)."""
    from poolwise.vision.train.classification import run_classification

    return run_classification(spec, run_dir, **kwargs)


def run_retrieval_cell(spec: RunSpec, run_dir: str | Path, **kwargs: Any) -> dict:
    """One class-disjoint cell: :func:`run_retrieval`, as a :func:`retrieval_record`."""
    from poolwise.vision.retrieval.run import run_retrieval

    return retrieval_record(run_retrieval(spec, run_dir, **kwargs))


def run_compare(out: str | Path, base: RunSpec, pools: Sequence[str], seeds: Sequence[int],
                *, task: str = "classification", protocol: str | None = None,
                **kwargs: Any) -> list[dict]:
    """The grid of one task (``TASKS``): :func:`run_grid` over :func:`run_classification_cell`
    or :func:`run_retrieval_cell`. ``protocol`` is the former name of ``task`` (deprecated)."""
    task = renamed_keyword("run_compare", "protocol", "task", protocol, task, "classification")
    return run_grid(out, base, pools, seeds, task_named(task).runner, **kwargs)


def task_named(name: str) -> Task:
    """The :class:`Task` of ``name``; a ValueError names the known ones."""
    if name not in TASKS:
        raise ValueError(f"task {name!r} is not one of {', '.join(TASKS)}")
    return TASKS[name]


def _metric(result: dict, key: str) -> float | None:
    if key in result:
        return result[key]
    return result.get("retrieval", {}).get(key)


def summarise_pools(results: Sequence[dict], metrics: Sequence[tuple] = METRICS) -> list[dict]:
    """One row per pool: :func:`poolwise.stats.summarise` of each metric over the seeds (with
    the values), mean learned p per group. ``metrics``: (key in result.json or its
    ``retrieval``, title, scale) triples."""
    by_pool: dict[str, list[dict]] = {}
    for r in results:
        by_pool.setdefault(r["spec"]["pool"], []).append(r)
    rows = []
    for pool, runs in by_pool.items():
        row = {"pool": pool, "seeds": [r["spec"]["seed"] for r in runs],
               "parameters": runs[0]["parameters"]}
        for key, _, scale in metrics:
            values = [v * scale for v in (_metric(r, key) for r in runs) if v is not None]
            row[key] = {**summarise(values), "values": values}
        ps = [r["p"] for r in runs if r.get("p")]
        row["p"] = np.mean(ps, axis=0).tolist() if ps else None
        rows.append(row)
    return rows


def verdicts(results: Sequence[dict], key: str = "accuracy", pool: str = "ggem",
             metrics: Sequence[tuple] = METRICS) -> list[dict]:
    """``pool`` against every other pool of the grid on ``key``, paired by seed:
    :func:`poolwise.stats.paired_comparison` (mean difference, t interval, paired t-test, and
    its sentence, prefixed with the metric's title). Empty when ``pool`` is not in the grid."""
    titles = {k: (t, scale) for k, t, scale in metrics}
    title, scale = titles[key]
    value = {(r["spec"]["pool"], r["spec"]["seed"]): _metric(r, key) for r in results}
    pools = list(dict.fromkeys(r["spec"]["pool"] for r in results))
    seeds = sorted({r["spec"]["seed"] for r in results})
    if pool not in pools:
        return []

    def scaled(name: str) -> list[float | None]:
        return [None if value.get((name, s)) is None else value[(name, s)] * scale
                for s in seeds]

    found = []
    for other in pools:
        if other != pool:
            comparison = paired_comparison(scaled(pool), scaled(other), names=(pool, other))
            comparison.update(metric=key, text=f"{title}: {comparison['text']}")
            found.append(comparison)
    return found


def pool_table(rows: Sequence[dict], metrics: Sequence[tuple] = METRICS) -> str:
    """Markdown: one row per pool, mean ± std of each metric, the learned p per group."""
    table = []
    for r in rows:
        p = "—" if not r["p"] else ", ".join(f"{v:.2f}" for v in r["p"][:12])
        if r["p"] and len(r["p"]) > 12:
            p += f", … ({len(r['p'])})"
        table.append([r["pool"], len(r["seeds"]), *(mean_std(r[k], 2) for k, _, _ in metrics), p])
    return markdown_table(["pool", "seeds", *(t for _, t, _ in metrics), "learned p per group"],
                          table)


def _model_line(results: Sequence[dict]) -> str:
    spec = results[0]["spec"]
    return (f"model `{spec['model']}` {json.dumps(spec['model_kwargs'])}, "
            f"{results[0]['parameters']:,} parameters ({spec['pool']}); {spec['epochs']} "
            f"epochs, batch {spec['batch_size']}, lr {spec['lr']}, weight decay "
            f"{spec['weight_decay']}, loss `{spec.get('loss', 'cross_entropy')}`")


def _classification_setup(results: Sequence[dict]) -> list[str]:
    spec = results[0]["spec"]
    return [f"Data: `{spec['data']}`; {_model_line(results)}; {len(results[0]['classes'])} "
            f"classes; test images: {results[0]['n']:,}.", "",
            "Mean ± std over seeds (std with ddof=1). Retrieval: the test images query "
            "each other (cosine, the query excluded). Head dependence: mean linear CKA "
            "between the pooled features of the head groups (lower = less dependent).", ""]


def _retrieval_setup(results: Sequence[dict]) -> list[str]:
    first = results[0]
    queries = first["retrieval"]["queries"]
    return [f"Data: `{first['spec']['data']}`, class-disjoint ({first['layout']}): trained on "
            f"{', '.join(first['seen_classes'])}; retrieval scored on the {queries:,} test "
            f"images of the unseen classes {', '.join(first['unseen_classes'])}, each querying "
            f"the others (cosine on the L2-normalised pooled embedding, the query excluded). "
            f"Seen: the test images of the training classes, the same way. "
            f"{_model_line(results)}.", "",
            "Mean ± std over seeds (std with ddof=1).", ""]


@dataclass(frozen=True)
class Task:
    """What a grid's cells train and how its report reads them."""

    runner: Callable[..., dict]  # one cell: runner(spec, run_dir, on_epoch=..., log_to=...)
    metrics: tuple  # the table's columns (METRICS or RETRIEVAL_METRICS)
    judged: tuple[str, str]  # the two metrics that get paired verdicts, the headline first
    headline: str  # the title of the first judged metric, printed as each cell finishes
    setup: Callable[[Sequence[dict]], list[str]]  # the report's lines on data and model

    def first_number(self, result: dict) -> tuple[str, float]:
        """The cell's headline number, as printed when it finishes."""
        return self.headline, _metric(result, self.judged[0])


TASKS = {
    "classification": Task(run_classification_cell, METRICS, ("accuracy", "map@r"), "accuracy",
                           _classification_setup),
    "retrieval": Task(run_retrieval_cell, RETRIEVAL_METRICS, ("recall@1", "map@r"),
                      "unseen Recall@1", _retrieval_setup),
}


def write_compare_report(out: str | Path, results: Sequence[dict], command: str, *,
                         task: str = "classification", protocol: str | None = None) -> Path:
    """compare.md (table, verdicts, setup, training curves), compare.json, compare.csv,
    compare.png, p.png, curves.png.

    ``task``: the grid's (``TASKS``); it picks the metrics (``METRICS`` or
    ``RETRIEVAL_METRICS``) and the two that get verdicts (top-1 and mAP@R, or unseen
    Recall@1 and mAP@R). ``protocol`` is the former name of ``task`` (deprecated); compare.json
    keeps the task under its ``protocol`` key."""
    task = renamed_keyword("write_compare_report", "protocol", "task", protocol, task,
                           "classification")
    out = Path(out)
    kind = task_named(task)
    metrics, judged = kind.metrics, kind.judged
    rows = summarise_pools(results, metrics)
    found = {k: verdicts(results, k, metrics=metrics) for k in judged}
    lines = [
        f"# Pooling comparison ({task})", "",
        f"Command: `{command}`", "",
        *kind.setup(results),
        pool_table(rows, metrics), "",
        "## Verdict", "",
        "GGeM against every other pool, paired by seed (difference of the means, 95 % t "
        "interval, paired t-test at 0.05; with 2-3 seeds only large differences can show).", "",
        *(f"- {v['text']}" for key in judged for v in found[key]),
        "",
        "![metrics](compare.png)", "",
        *(["![learned p](p.png)", ""] if any(r.get("p") for r in results) else []),
        *curve_lines(results),
        "Training time per run (s): "
        + ", ".join(f"{r['spec']['pool']}/{r['spec']['seed']} {r['train_seconds']:.0f}"
                    for r in results),
        "",
    ]
    write_text(out / "compare.md", "\n".join(lines))
    write_json(out / "compare.json", {"command": command, "protocol": task, "rows": rows,
                                      "verdict": found})
    columns = [k for k, _, _ in metrics]
    columns += [k for k in ("r_precision", "dependence") if k not in columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["pool", "seed", *columns, "p"])
    for r in results:
        writer.writerow([r["spec"]["pool"], r["spec"]["seed"], *(_metric(r, k) for k in columns),
                         " ".join(f"{v:.4f}" for v in r["p"] or [])])
    write_text(out / "compare.csv", buffer.getvalue())
    plot_report(out, rows, results, metrics)
    return out / "compare.md"
