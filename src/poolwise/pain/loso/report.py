"""Merging LOSO fold files into tables, plots and one Markdown report.

A run folder is any folder with a ``run.json`` written by :func:`poolwise.pain.loso.run.run_loso`;
its ``fold_<name>.json`` files may come from several jobs (``--folds``). Metrics are computed
twice: pooled over every held-out window of every fold, and per subject (from each test
subject's windows, averaged as mean +- sample std over the subjects where the metric is
defined; the others are counted and listed, never averaged as NaN).

Two classes get the binary metrics (:data:`poolwise.pain.metrics.METRICS`), K > 2 the K-class
ones (:data:`poolwise.pain.metrics.MULTICLASS_METRICS`, plus each class's F1); one report
holds runs of one class set. Runs of the challenge protocol (one fixed split, the test subjects
scored once) sit in the same tables as LOSO runs, labelled ``[challenge split]``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from poolwise._figures import figure, save_figure
from poolwise._io import write_json, write_text
from poolwise._tables import markdown_table, mean_std, number
from poolwise.pain.data.dataset import BINARY_CLASSES
from poolwise.pain.loso.protocols import PROTOCOL_TYPES
from poolwise.pain.loso.provenance import check_comparable, duration, environment_lines
from poolwise.pain.loso.records import find_runs, load_run
from poolwise.pain.loso.summary import (
    BOOTSTRAP_RESAMPLES,
    CI_METRICS,
    compare_runs,
    summarise_run,
)

METRIC_NAMES = {
    "f1": "F1 (protective)",
    "macro_f1": "macro F1",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "mcc": "MCC",
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
}


def gap_rows(summaries: list[dict]) -> list[list[str]]:
    """Reference minus clean, per model that has both.

    The reference protocol scores the held-out subject's augmented copies too (the authors'
    test set); the "original windows" column scores only the un-augmented ones.
    """
    by_key = {(s["model"], s["protocol"]): s for s in summaries}
    rows = []
    for model in sorted({s["model"] for s in summaries}):
        clean, reference = by_key.get((model, "clean")), by_key.get((model, "reference"))
        if clean is None or reference is None:
            continue
        for metric in [m for m in ("macro_f1", "f1", "mcc", "roc_auc") if m in clean["metrics"]]:
            a, b = clean["pooled"][metric], reference["pooled"][metric]
            e = reference["pooled_original_windows"][metric]
            c = clean["per_subject_summary"][metric]["mean"]
            d = reference["per_subject_summary"][metric]["mean"]
            rows.append([
                model, METRIC_NAMES[metric], number(a), number(b), _gap(a, b), number(e),
                _gap(a, e), number(c), number(d), _gap(c, d),
            ])
    return rows


def _with_interval(ci: dict) -> str:
    if ci["estimate"] is None:
        return "n/a"
    if ci["ci"] is None:
        return number(ci["estimate"])
    return f"{ci['estimate']:.3f} ({ci['ci'][0]:.3f} to {ci['ci'][1]:.3f})"


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _finding(comparison: dict) -> str:
    if comparison["p_value"] is None:
        return "too few subjects"
    if comparison["p_value"] >= 0.05:
        return "no evidence of a difference"
    return "first higher" if comparison["mean_difference"] > 0 else "first lower"


def _gap(clean: float | None, reference: float | None) -> str:
    return "n/a" if clean is None or reference is None else f"{reference - clean:+.3f}"


def _plots(summaries: list[dict], out: Path) -> list[str]:
    written = []
    n = len(summaries)
    fig = figure((2.6 * n, 2.8))
    axes = fig.subplots(1, n, squeeze=False)
    for ax, s in zip(axes[0], summaries, strict=True):
        matrix = np.array(s["confusion"])
        ax.imshow(matrix / max(matrix.sum(1, keepdims=True).max(), 1), cmap="Blues", vmin=0)
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=9)
        names = (["non-prot.", "prot."] if tuple(s["class_names"]) == BINARY_CLASSES
                 else s["class_names"])
        ax.set_xticks(range(len(names)), names, fontsize=7, rotation=30 * (len(names) > 2))
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_title(s["label"], fontsize=7)
        ax.set_xlabel("predicted", fontsize=7)
    axes[0][0].set_ylabel("true", fontsize=7)
    fig.tight_layout()
    written += save_figure(fig, out / "confusion_matrices.png")

    fig = figure((max(4, 0.9 * n + 2), 3.8))
    ax = fig.subplots()
    ticks, marked = [], False
    for i, s in enumerate(summaries):
        values = [v["macro_f1"] for v in s["per_subject"].values() if v["macro_f1"] is not None]
        undefined = sum(v["macro_f1"] is None for v in s["per_subject"].values())
        jitter = np.random.default_rng(i).uniform(-0.15, 0.15, len(values))
        ax.scatter(i + jitter, values, s=10, alpha=0.6, color="C0",
                   label="a held-out subject" if i == 0 else None)
        if undefined:  # marked below the axis, not dropped
            ax.scatter(i + np.linspace(-0.15, 0.15, undefined), [-0.06] * undefined, s=14,
                       marker="x", color="C3", label=None if marked else "metric undefined")
            marked = True
        if s["pooled"]["macro_f1"] is not None:
            ax.hlines(s["pooled"]["macro_f1"], i - 0.3, i + 0.3, color="k",
                      label="pooled over all windows" if i == 0 else None)
        ticks.append(s["label"] + (f"\n({undefined} undefined)" if undefined else ""))
    ax.set_xticks(range(n), ticks, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("macro F1 per held-out subject")
    ax.set_ylim(-0.1, 1.02)
    ax.axhline(0, color="0.8", lw=0.6)
    ax.set_title("undefined: a subject of one class with no other prediction", fontsize=7)
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    written += save_figure(fig, out / "per_subject_macro_f1.png")
    return written


def _csv(summaries: list[dict], metrics: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["model", "protocol", "subject", *metrics])
    for s in summaries:
        for subject, values in s["per_subject"].items():
            writer.writerow([s["model"], s["protocol"], subject,
                             *("" if values[m] is None else f"{values[m]:.6f}" for m in metrics)])
    return buffer.getvalue()


def write_report(run_paths: list[str | Path], out: str | Path, command: str | None = None) -> Path:
    """Writes report.md, summary.json, per_subject.csv and plots (PNG and SVG) into ``out``."""
    out = Path(out)
    runs = [load_run(p) for p in find_runs(run_paths)]
    runs = [r for r in runs if r.folds]
    if not runs:
        raise ValueError("none of the runs has a finished fold yet")
    runs.sort(key=lambda r: (r.model, r.protocol, r.config.get("seed", 0)))
    kinds = [(r.model, r.protocol) for r in runs]
    for run in runs:
        run.seed_in_label = kinds.count((run.model, run.protocol)) > 1
    check_comparable(runs)
    summaries = [summarise_run(r) for r in runs]
    metrics = tuple(summaries[0]["metrics"])
    class_names = runs[0].class_names
    binary = len(class_names) == 2
    figures = _plots(summaries, out)
    data = runs[0].config["data"]
    lines = ["# Leave-one-subject-out report", ""]
    if command:
        lines += ["Made with:", "", "```", command, "```", ""]
    lines += [
        f"Data: {data['windows']} windows of {data['window']} frames, "
        f"{len(data['subjects'])} subjects (fingerprint `{data['fingerprint']}`).",
        "",
        *environment_lines(runs, summaries),
        "Pooled: all held-out windows of all folds together. Per subject: mean ± std over the "
        "held-out subjects (the count in brackets where a metric is undefined for some "
        "subjects, e.g. no protective window).",
        "",
    ]
    if not binary:
        lines += [f"{len(class_names)} classes: {', '.join(class_names)}. Predictions are the "
                  "most probable class; ROC-AUC and PR-AUC are one class against the rest, "
                  "averaged over the classes present; balanced accuracy is the mean recall "
                  "over the classes present.", ""]
    for kind in reversed(PROTOCOL_TYPES.values()):  # challenge's note, then reference's
        if kind.report_note is not None and any(r.evaluation is kind for r in runs):
            lines += [kind.report_note, ""]
    rows = []
    for s in summaries:
        p, ps = s["pooled"], s["per_subject_summary"]
        folds = f"{s['folds']}/{s['fold_total']}"
        rows.append([
            s["label"], f"{s['n_parameters']:,}", folds, str(s["test_subjects"]),
            "closed form" if s.get("closed_form") else str(s["epochs"]),
            duration(s["seconds"]), *(number(p[m]) for m in metrics),
            mean_std(ps["macro_f1"]), mean_std(ps["mcc"]),
        ])
    lines += [
        "## Results",
        "",
        markdown_table(
            ["model", "params", "folds", "test subjects", "epochs", "fold time",
             *(METRIC_NAMES[m] for m in metrics), "macro F1 per subject", "MCC per subject"],
            rows,
        ),
        "",
        "params: trainable parameters; for the closed-form ROCKET models, the numbers fitted "
        "to the data (ridge weights and intercepts, scaler statistics). fold time: the folds' "
        "wall times added up (fitting and scoring; folds run side by side overlap).",
        "",
    ]
    lines += [
        "Pooled metrics with 95 % bootstrap intervals (the held-out subjects resampled with "
        f"replacement, {BOOTSTRAP_RESAMPLES} resamples; percentile intervals):",
        "",
        markdown_table(["model", *(METRIC_NAMES[m] for m in CI_METRICS)],
                       [[s["label"], *(_with_interval(s["pooled_ci"][m]) for m in CI_METRICS)]
                        for s in summaries]),
        "",
    ]
    comparisons = compare_runs(summaries)
    if comparisons:
        lines += [
            "## Paired comparisons over subjects",
            "",
            "Runs of the same protocol, paired by held-out subject: the mean difference of the "
            "per-subject metric (first minus second), a 95 % bootstrap interval, and the "
            "Wilcoxon signed-rank test over the subjects where both runs define the metric "
            "(n); 'no evidence' where p >= 0.05.",
            "",
            markdown_table(
                ["first", "second", "metric", "n", "mean difference", "95 % interval", "p",
                 "finding"],
                [[c["names"][0], c["names"][1], METRIC_NAMES[c["metric"]], c["n"],
                  _signed(c["mean_difference"]),
                  "n/a" if c["ci"] is None else f"{c['ci'][0]:+.3f} to {c['ci'][1]:+.3f}",
                  "n/a" if c["p_value"] is None else f"{c['p_value']:.2g}",
                  _finding(c)] for c in comparisons]),
            "",
        ]
    gaps = gap_rows(summaries)
    if gaps:
        lines += [
            "## Clean vs REFERENCE (leaky) protocol",
            "",
            "Gap = reference minus clean: how much the leaks inflate the number. The reference "
            "protocol's own test set holds the held-out subject's augmented copies too; the "
            "'original windows' column scores its models on the un-augmented windows only.",
            "",
            markdown_table(["model", "metric", "clean pooled", "reference pooled", "gap",
                    "reference pooled, original windows", "gap", "clean per subject",
                    "reference per subject", "gap"], gaps),
            "",
        ]
    lines += ["## By subject group (pooled)", ""]
    second = "f1" if binary else "balanced_accuracy"
    group_rows = [
        [s["label"], group, str(g["subjects"]), number(g["macro_f1"]), number(g[second]),
         number(g["accuracy"]), number(g["roc_auc"])]
        for s in summaries for group, g in s["by_group"].items()
    ]
    lines += [markdown_table(["model", "group", "subjects", "macro F1", METRIC_NAMES[second],
                              "accuracy", "ROC-AUC"], group_rows), ""]
    if not binary:
        lines += ["## F1 per class (pooled)", "", markdown_table(
            ["model", *class_names],
            [[s["label"], *map(number, s["pooled"]["f1_per_class"])] for s in summaries]), ""]
    lines += ["## Plots", ""]
    for name in figures:
        if name.endswith(".png"):
            vector = Path(name).with_suffix(".svg").name
            lines += [f"![{name}]({name})", "", f"Vector version: [{vector}]({vector})", ""]
    lines += ["## Per subject", ""]
    for s in summaries:
        undefined = s["undefined_subjects"]["macro_f1"]
        lines += [f"### {s['label']}", ""]
        if undefined:
            lines += [f"Macro F1 undefined (one class, none predicted otherwise) for: "
                      f"{', '.join(undefined)}.", ""]
        lines += [markdown_table(
            ["subject", *(METRIC_NAMES[m] for m in metrics)],
            [[subject, *(number(v[m]) for m in metrics)]
             for subject, v in s["per_subject"].items()],
        ), ""]
    write_text(out / "report.md", "\n".join(lines))
    write_json(out / "summary.json", summaries)
    if comparisons:
        write_json(out / "comparisons.json", comparisons)
    write_text(out / "per_subject.csv", _csv(summaries, metrics))
    return out / "report.md"
