"""Statistics shared by every report: summaries, paired comparisons, subject bootstrap.

One implementation serves the vision pool comparisons (pairs: the same seed) and the pain
LOSO reports (pairs: the same held-out subject). Undefined values (``None``: a metric that a
subject's labels or a seed's run do not define) are counted, never averaged.

- :func:`summarise`: mean, sample std, counts.
- :func:`paired_comparison`: the mean paired difference with a confidence interval and a paired
  test (``"t"``: scipy's ``ttest_rel`` and its t interval; ``"wilcoxon"``: scipy's signed-rank
  test, with a percentile bootstrap interval of the mean difference), and one sentence that says
  "no evidence of a difference" where the test does not reject.
- :func:`bootstrap_ci`: a percentile interval of any statistic of a pooled set of groups,
  resampling whole groups (subjects) with replacement. Written here rather than through
  ``scipy.stats.bootstrap`` because a resample can leave a metric undefined (all windows of one
  class): such resamples are dropped and counted instead of turning the interval into NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import stats as sps

__all__ = ["bootstrap_ci", "paired_comparison", "summarise"]


def summarise(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation (ddof=1) and count of the defined values, and how many
    were undefined. ``std`` is None below two defined values, ``mean`` None below one."""
    defined = np.array([v for v in values if v is not None], dtype=np.float64)
    return {
        "mean": float(defined.mean()) if len(defined) else None,
        "std": float(defined.std(ddof=1)) if len(defined) > 1 else None,
        "n": len(defined),
        "undefined": len(values) - len(defined),
    }


def paired_comparison(
    a: Sequence[float | None],
    b: Sequence[float | None],
    *,
    names: tuple[str, str] = ("a", "b"),
    test: str = "t",
    confidence: float = 0.95,
    alpha: float = 0.05,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """Compares paired values ``a[i]`` and ``b[i]`` (the same seed, or the same subject).

    Pairs where either value is None are left out and counted (``undefined``). Returns
    ``{"names", "n", "undefined", "mean_difference" (a - b), "ci" [low, high], "confidence",
    "test", "statistic", "p_value", "text"}``; ``mean_difference``, ``ci``, ``statistic`` and
    ``p_value`` are None below two pairs. Where every difference is the same the interval is
    that difference and the p value is 1 for zero differences, 0 otherwise.

    Raises:
        ValueError: for sequences of different lengths or an unknown ``test``.
    """
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    if test not in ("t", "wilcoxon"):
        raise ValueError(f"test={test!r} is not one of 't', 'wilcoxon'")
    pairs = np.array([(x, y) for x, y in zip(a, b, strict=True)
                      if x is not None and y is not None], dtype=np.float64).reshape(-1, 2)
    diff = pairs[:, 0] - pairs[:, 1]
    result = {"names": list(names), "n": len(diff), "undefined": len(a) - len(diff),
              "mean_difference": None, "ci": None, "confidence": confidence,
              "test": "paired t-test" if test == "t" else "Wilcoxon signed-rank test",
              "statistic": None, "p_value": None}
    if len(diff) < 2:
        result["text"] = (f"{names[0]} vs {names[1]}: {len(diff)} pair(s) with both values, "
                          "too few to compare")
        return result
    mean = float(diff.mean())
    if np.all(diff == diff[0]):
        ci, statistic, p = (mean, mean), None, 1.0 if diff[0] == 0 else 0.0
    elif test == "t":
        t = sps.ttest_rel(pairs[:, 0], pairs[:, 1])
        interval = t.confidence_interval(confidence)
        ci, statistic, p = (float(interval.low), float(interval.high)), float(t.statistic), \
            float(t.pvalue)
    else:
        w = sps.wilcoxon(diff)
        rng = np.random.default_rng(seed)
        means = diff[rng.integers(0, len(diff), (n_resamples, len(diff)))].mean(axis=1)
        tail = 100 * (1 - confidence) / 2
        ci = (float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail)))
        statistic, p = float(w.statistic), float(w.pvalue)
    result.update(mean_difference=mean, ci=list(ci), statistic=statistic, p_value=p)
    if p >= alpha:
        finding = "no evidence of a difference"
    else:
        finding = f"{names[0]} is {'higher' if mean > 0 else 'lower'}"
    result["text"] = (
        f"{names[0]} − {names[1]} = {mean:+.3g} ({100 * confidence:g}% CI {ci[0]:+.3g} to "
        f"{ci[1]:+.3g}; {result['test']} p = {p:.2g}, n = {len(diff)}"
        + (f", {result['undefined']} undefined" if result["undefined"] else "")
        + f"): {finding}"
    )
    return result


def bootstrap_ci(
    groups: Sequence[object],
    statistic: Callable[[list], float | Mapping[str, float | None] | None],
    *,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Percentile interval of ``statistic(list of groups)`` over resamples of whole groups.

    Each resample draws ``len(groups)`` groups with replacement (a subject drawn twice counts
    twice) and calls ``statistic`` on them; resamples where it returns None are left out and
    counted. Returns ``{"estimate", "ci" [low, high] or None, "confidence", "resamples",
    "undefined_resamples"}``; for a statistic that returns a mapping of named values (several
    metrics of one resample), that dict for each name.
    """
    estimate = statistic(list(groups))
    named = isinstance(estimate, Mapping)
    names = list(estimate) if named else [None]
    rng = np.random.default_rng(seed)
    values: dict = {name: [] for name in names}
    for draw in rng.integers(0, len(groups), (n_resamples, len(groups))):
        value = statistic([groups[i] for i in draw])
        for name in names:
            values[name].append(value[name] if named else value)
    tail = 100 * (1 - confidence) / 2

    def interval(name: str | None) -> dict:
        defined = [v for v in values[name] if v is not None]
        ci = ([float(np.percentile(defined, tail)), float(np.percentile(defined, 100 - tail))]
              if defined else None)
        return {"estimate": estimate[name] if named else estimate, "ci": ci,
                "confidence": confidence, "resamples": n_resamples,
                "undefined_resamples": n_resamples - len(defined)}

    return {name: interval(name) for name in names} if named else interval(None)
