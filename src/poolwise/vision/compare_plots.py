"""The plots of a pools x seeds comparison (:mod:`poolwise.vision.compare`): the metrics per
pool, the learned exponents, and the training curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from poolwise._figures import figure, save_figure


def plot_metrics(path: Path, rows: Sequence[dict], metrics: Sequence[tuple]) -> None:
    """One panel per metric: every seed as a point and the mean ± std (ddof 1) per pool, GGeM
    in red. Points and error bars, not bars: the y axis is zoomed to the data, and its label
    says so, so that differences of tenths of a point stay visible without a truncated bar."""
    fig = figure((4 * len(metrics), 3.6))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, (key, title, _) in zip(axes, metrics, strict=True):
        shown = [r for r in rows if r[key]["mean"] is not None]
        for i, r in enumerate(shown):
            color = "C3" if r["pool"] == "ggem" else "C0"
            seeds = r[key]["values"]
            offsets = np.linspace(-0.12, 0.12, len(seeds)) if len(seeds) > 1 else [0.0]
            ax.plot(i + np.asarray(offsets), seeds, ".", color="0.45", ms=5,
                    label="one seed" if i == 0 else None)
            ax.errorbar(i, r[key]["mean"], yerr=r[key]["std"] or 0, fmt="o", color=color,
                        ms=6, capsize=4, label="mean ± std" if i == 0 else None)
        ax.set_xticks(range(len(shown)), [r["pool"] for r in shown], rotation=45, ha="right",
                      rotation_mode="anchor")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(f"{title} (axis zoomed to the data)", fontsize=7)
        ax.margins(y=0.25)
        ax.grid(axis="y", lw=0.3, alpha=0.6)
    axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def plot_exponents(path: Path, results: Sequence[dict]) -> None:
    """The learned p of every cell: one panel per pool that learns p (GeM, GGeM, CGeM...),
    x = group, one line per seed, the initial p = 3 dashed."""
    from matplotlib.ticker import MaxNLocator

    pools = list(dict.fromkeys(r["spec"]["pool"] for r in results if r.get("p")))
    fig = figure((4.2 * len(pools), 3.2))
    axes = fig.subplots(1, len(pools), squeeze=False)[0]
    for ax, pool in zip(axes, pools, strict=True):
        for r in (r for r in results if r["spec"]["pool"] == pool and r.get("p")):
            style = "o-" if len(r["p"]) > 1 else "s"
            ax.plot(range(1, len(r["p"]) + 1), r["p"], style, alpha=0.7, ms=4,
                    label=f"seed {r['spec']['seed']}")
        ax.axhline(3.0, color="grey", lw=0.8, ls="--", label="initial p = 3")
        ax.set_title(pool, fontsize=10)
        groups = max(len(r["p"]) for r in results if r["spec"]["pool"] == pool and r.get("p"))
        if groups <= 12:
            ax.set_xticks(range(1, groups + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("group")
        ax.set_ylabel("learned p")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _mean_curve(results: Sequence[dict], key: str) -> np.ndarray | None:
    """The mean over cells of ``key`` per epoch (cells of equal length), or None."""
    curves = [[h.get(key) for h in r.get("history") or []] for r in results]
    if not curves or any(not c or None in c for c in curves) or len({len(c) for c in curves}) > 1:
        return None
    return np.mean(np.asarray(curves, dtype=float), axis=0)


CURVES = (("train_loss", "train loss"), ("test_loss", "test loss"),
          ("test_accuracy", "test top-1 accuracy"), ("test_recall@1", "test Recall@1"))


def _by_pool(results: Sequence[dict]) -> dict[str, list[dict]]:
    pools: dict[str, list[dict]] = {}
    for r in results:
        pools.setdefault(r["spec"]["pool"], []).append(r)
    return pools


def plot_curves(path: Path, results: Sequence[dict]) -> bool:
    """Per epoch, the mean over seeds of each pool: training loss, then what the runs scored on
    the test images each epoch (loss, top-1 or Recall@1), GGeM in red. False when the runs have
    no per-epoch history to draw."""
    pools = _by_pool(results)
    panels = [(k, t) for k, t in CURVES
              if all(_mean_curve(cells, k) is not None for cells in pools.values())]
    if not panels:
        return False
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    palette = [c for i, c in enumerate(colormaps["tab20"].colors) if i not in (6, 7)]  # no red
    fig = figure((4 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, title) in zip(axes, panels, strict=True):
        others = 0
        for pool, cells in pools.items():
            curve = _mean_curve(cells, key)
            color = "C3" if pool == "ggem" else palette[others % len(palette)]
            others += pool != "ggem"
            ax.plot(range(1, len(curve) + 1), curve, "o-", ms=3,
                    lw=1.6 if pool == "ggem" else 0.9, color=color, label=pool)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(lw=0.3, alpha=0.6)
    axes[-1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return True


def curve_lines(results: Sequence[dict]) -> list[str]:
    """compare.md's lines on the curves: the picture, and how much each pool's mean training
    loss still fell over the last epoch (a few percent or less: flattening)."""
    pools = _by_pool(results)
    drops = {}
    for pool, cells in pools.items():
        curve = _mean_curve(cells, "train_loss")
        if curve is not None and len(curve) >= 2 and curve[-2] > 0:
            drops[pool] = 100.0 * (curve[-2] - curve[-1]) / curve[-2]
    if not drops:
        return []
    epochs = len(next(iter(pools.values()))[0]["history"])
    return ["## Training curves", "", "![training curves](curves.png)", "",
            f"Mean training loss over the seeds: its fall over the last epoch ({epochs - 1} to "
            f"{epochs}), per pool: " + ", ".join(f"{p} {d:.1f} %" for p, d in drops.items())
            + ".", ""]


def plot_report(out: Path, rows: Sequence[dict], results: Sequence[dict],
                metrics: Sequence[tuple]) -> None:
    """compare.png, and p.png and curves.png where the runs have them."""
    plot_metrics(out / "compare.png", rows, metrics)
    if any(r.get("p") for r in results):
        plot_exponents(out / "p.png", results)
    plot_curves(out / "curves.png", results)
