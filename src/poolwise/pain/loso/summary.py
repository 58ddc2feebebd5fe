"""A LOSO run in numbers: pooled and per-subject metrics with bootstrap intervals
(:func:`summarise_run`), and paired tests between runs of one protocol (:func:`compare_runs`)."""

from __future__ import annotations

import numpy as np

from poolwise.pain.loso.records import Run, subject_cohorts, test_windows
from poolwise.pain.loso.run import fold_seconds
from poolwise.pain.metrics import confusion_matrix, metric_names, per_subject_metrics, score
from poolwise.pain.models import model_entry
from poolwise.stats import bootstrap_ci, paired_comparison, summarise

# pooled metrics given with a bootstrap interval, and per-subject metrics compared between runs
CI_METRICS = ("macro_f1", "mcc", "roc_auc")
COMPARED_METRICS = ("macro_f1", "mcc")
BOOTSTRAP_RESAMPLES = 1000


def pooled_intervals(run: Run, *, n_resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = 0) -> dict[str, dict]:
    """95 % percentile intervals of the pooled metrics, resampling held-out subjects (their
    folds' windows whole) with replacement: :func:`poolwise.stats.bootstrap_ci`."""
    labels, prob, subject, _ = test_windows(run)
    by_subject = [(labels[subject == s], prob[subject == s]) for s in sorted(set(subject))]

    def statistic(groups: list) -> dict[str, float | None]:
        metrics = score(np.concatenate([y for y, _ in groups]),
                        np.concatenate([p for _, p in groups]))
        return {m: metrics[m] for m in CI_METRICS}

    return bootstrap_ci(by_subject, statistic, n_resamples=n_resamples, seed=seed)


def compare_runs(summaries: list[dict]) -> list[dict]:
    """Every pair of runs of one protocol, paired by held-out subject: the Wilcoxon signed-rank
    test of the per-subject metric over the subjects where both define it
    (:func:`poolwise.stats.paired_comparison`)."""
    found = []
    for i, a in enumerate(summaries):
        for b in summaries[i + 1:]:
            if a["protocol"] != b["protocol"]:
                continue
            subjects = sorted(set(a["per_subject"]) & set(b["per_subject"]))
            for m in COMPARED_METRICS:
                r = paired_comparison([a["per_subject"][s][m] for s in subjects],
                                      [b["per_subject"][s][m] for s in subjects],
                                      names=(a["label"], b["label"]), test="wilcoxon")
                found.append({**r, "metric": m})
    return found


def summarise_run(run: Run) -> dict:
    if not run.folds:
        raise ValueError(f"{run.path}: no finished folds yet")
    labels, prob, subject, variant = test_windows(run)
    metrics = metric_names(len(run.class_names))
    seconds = fold_seconds(run.path)
    per_subject = per_subject_metrics(labels, prob, subject)
    group_of = subject_cohorts(run)
    window_group = np.array([group_of[s] for s in subject])
    by_group = {}
    for group in sorted(set(group_of.values())):
        mask = window_group == group
        by_group[group] = {"subjects": sum(g == group for g in group_of.values()),
                           **score(labels[mask], prob[mask])}
    return {
        "model": run.model,
        "protocol": run.protocol,
        "label": run.label,
        "class_names": list(run.class_names),
        "metrics": list(metrics),
        "path": str(run.path),
        "n_parameters": run.folds[0]["n_parameters"],
        "folds": len(run.folds),
        "fold_total": run.evaluation.fold_total(run.config["data"]["subjects"]),
        "test_subjects": len(per_subject),
        "subjects": len(run.config["data"]["subjects"]),
        "epochs": run.config["train"]["epochs"],
        "closed_form": model_entry(run.model).closed_form,
        "epoch_chosen_mean": float(np.mean([f["epoch_chosen"] for f in run.folds])),
        "windows": len(labels),
        "pooled": score(labels, prob),
        "pooled_ci": pooled_intervals(run),
        "pooled_original_windows": score(labels[variant == 0], prob[variant == 0]),
        "confusion": confusion_matrix(labels, prob).tolist(),
        "per_subject": per_subject,
        "per_subject_summary": {
            m: summarise([s[m] for s in per_subject.values()]) for m in metrics
        },
        "undefined_subjects": {
            m: sorted(s for s, v in per_subject.items() if v[m] is None) for m in metrics
        },
        "by_group": by_group,
        "seconds": float(sum(seconds.get(f["test_subject"], f.get("seconds", 0.0))
                             for f in run.folds)),
    }
