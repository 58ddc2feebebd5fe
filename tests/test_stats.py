"""poolwise.stats against hand-computed values."""

import math

import numpy as np
import pytest

from poolwise.stats import bootstrap_ci, paired_comparison, summarise


def test_summarise_counts_undefined_values():
    s = summarise([0.5, None, 0.7])
    assert s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(math.sqrt(0.02))
    assert (s["n"], s["undefined"]) == (2, 1)
    assert summarise([None]) == {"mean": None, "std": None, "n": 0, "undefined": 1}


def test_paired_t_by_hand():
    # differences 0.5, 0.2, 0.6: mean 0.4333, sd 0.20817, se 0.12019, t = 3.6056 (df 2);
    # t(0.975, 2) = 4.3027, so the 95 % interval is 0.4333 -+ 0.5171; two-sided p = 0.0691
    r = paired_comparison([1.0, 2.0, 3.5], [0.5, 1.8, 2.9], names=("ggem", "gem"))
    assert r["n"] == 3 and r["mean_difference"] == pytest.approx(0.43333, abs=1e-5)
    assert r["statistic"] == pytest.approx(3.6056, abs=1e-4)
    assert r["ci"] == pytest.approx([0.43333 - 0.51715, 0.43333 + 0.51715], abs=1e-4)
    assert r["p_value"] == pytest.approx(0.0691, abs=1e-4)
    assert r["text"].endswith("no evidence of a difference")
    assert r["text"].startswith("ggem − gem = +0.433 (95% CI -0.0838 to +0.95; paired t-test")


def test_paired_t_rejects_a_clear_difference():
    r = paired_comparison([2.0, 3.1, 4.0, 5.2], [1.0, 2.0, 3.1, 4.0], names=("x", "y"))
    assert r["p_value"] < 0.01 and r["text"].endswith("x is higher")
    assert r["ci"][0] > 0


def test_wilcoxon_exact_by_hand():
    # differences 0.5, 0.2, 0.6, 0.1, -0.05: the only negative one has the smallest |d|, so
    # W- = 1; of the 32 sign patterns, W <= 1 has 2, so the two-sided p = 2 * 2 / 32
    a = [1.5, 1.2, 1.6, 1.1, 0.95]
    r = paired_comparison(a, [1.0] * 5, test="wilcoxon")
    assert r["statistic"] == 1.0 and r["p_value"] == pytest.approx(0.125)
    assert r["mean_difference"] == pytest.approx(0.27)
    assert r["ci"][0] <= 0.27 <= r["ci"][1] and r["test"] == "Wilcoxon signed-rank test"


def test_paired_edge_cases():
    r = paired_comparison([0.5, None, 0.7], [0.4, 0.3, None])
    assert (r["n"], r["undefined"], r["p_value"]) == (1, 2, None)
    assert "too few to compare" in r["text"]
    same = paired_comparison([1.0, 2.0], [1.0, 2.0])
    assert same["p_value"] == 1.0 and same["ci"] == [0.0, 0.0]
    shifted = paired_comparison([1.5, 2.5], [1.0, 2.0])
    assert shifted["p_value"] == 0.0 and shifted["ci"] == [0.5, 0.5]
    with pytest.raises(ValueError, match="equal lengths"):
        paired_comparison([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="test='z'"):
        paired_comparison([1.0], [1.0], test="z")


def test_bootstrap_resamples_whole_groups():
    def pooled_mean(groups):
        return float(np.mean(np.concatenate(groups)))

    same = [np.array([1.0, 2.0])] * 5  # identical groups: every resample gives the estimate
    r = bootstrap_ci(same, pooled_mean, n_resamples=50)
    assert r["estimate"] == 1.5 and r["ci"] == [1.5, 1.5]
    rng = np.random.default_rng(1)
    groups = [rng.normal(m, 1.0, 20) for m in rng.normal(0, 1, 30)]
    wide = bootstrap_ci(groups[:6], pooled_mean, seed=3)
    narrow = bootstrap_ci(groups, pooled_mean, seed=3)
    assert wide["ci"][0] <= wide["estimate"] <= wide["ci"][1]
    assert narrow["ci"][1] - narrow["ci"][0] < wide["ci"][1] - wide["ci"][0]
    assert bootstrap_ci(groups, pooled_mean, seed=3) == narrow  # seeded


def test_bootstrap_of_several_named_values_uses_the_same_resamples():
    rng = np.random.default_rng(2)
    groups = [rng.normal(0, 1, 10) for _ in range(12)]

    def both(gs):
        values = np.concatenate(gs)
        return {"mean": float(values.mean()), "max": float(values.max())}

    r = bootstrap_ci(groups, both, seed=4)
    alone = bootstrap_ci(groups, lambda gs: float(np.concatenate(gs).mean()), seed=4)
    assert r["mean"] == alone and r["max"]["estimate"] == both(groups)["max"]


def test_bootstrap_counts_undefined_resamples():
    groups = [np.array([0]), np.array([1])]

    def needs_both(gs):
        values = np.concatenate(gs)
        return None if len(set(values.tolist())) < 2 else float(values.mean())

    r = bootstrap_ci(groups, needs_both, n_resamples=400, seed=0)
    # a resample of 2 groups holds both with probability 1/2
    assert 120 < r["undefined_resamples"] < 280 and r["ci"] == [0.5, 0.5]
