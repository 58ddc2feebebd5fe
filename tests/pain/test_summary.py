"""A run's numbers and the paired comparisons between runs
(:mod:`poolwise.pain.loso.summary`)."""

import pytest

from poolwise.pain.loso.summary import compare_runs


def test_runs_are_compared_over_subjects_by_hand():
    def summary(label, f1, protocol="clean"):
        return {"label": label, "protocol": protocol, "per_subject": {
            f"S{i}": {"macro_f1": v, "mcc": None if v is None else v - 0.5}
            for i, v in enumerate(f1)}}

    a = summary("A", [0.9, 0.8, 0.85, 0.7, 0.6, None])
    b = summary("B", [0.4, 0.6, 0.25, 0.6, 0.65, 0.5])
    found = compare_runs([a, b, summary("R", [0.9] * 6, protocol="reference")])
    assert [(c["names"], c["metric"]) for c in found] == [
        (["A", "B"], "macro_f1"), (["A", "B"], "mcc")]  # R: another protocol, not paired
    f1 = found[0]
    # 5 subjects define both (S5 not): differences 0.5, 0.2, 0.6, 0.1, -0.05; W = 1, p = 0.125
    assert (f1["n"], f1["undefined"]) == (5, 1)
    assert f1["statistic"] == 1.0 and f1["p_value"] == pytest.approx(0.125)
    assert f1["text"].endswith("no evidence of a difference")
