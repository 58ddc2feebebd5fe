"""Metrics against hand-computed values, brute-force definitions and identities."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolwise.pain.metrics import (
    average_precision,
    binary_metrics,
    confusion,
    per_subject_metrics,
    roc_auc,
)
from poolwise.stats import summarise


def test_hand_computed_example():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.4, 0.05])
    # predictions at 0.5: 1 1 0 1 0 0 0 0 -> TP 2, FN 1, FP 1, TN 4
    assert confusion(y, (p >= 0.5).astype(int)).tolist() == [[4, 1], [1, 2]]
    m = binary_metrics(y, p)
    assert m["f1"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx((4 / 6 + 8 / 10) / 2)  # class 0: 2*4/(8+1+1)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["mcc"] == pytest.approx((2 * 4 - 1 * 1) / math.sqrt(3 * 3 * 5 * 5))
    # positives 0.9, 0.8, 0.3 against 5 negatives: 5 + 5 + 3 (0.3 beats 0.2, 0.1, 0.05) of 15
    assert m["roc_auc"] == pytest.approx(13 / 15)
    # ranked: 0.9+ 0.8+ 0.6- 0.4- 0.3+ -> AP = (1/3)(1 + 1 + 3/5)
    assert m["pr_auc"] == pytest.approx((1 + 1 + 3 / 5) / 3)


def test_macro_f1_is_not_the_authors_precision_variant():
    y = np.array([1, 0, 0, 0])
    p = np.array([0.9, 0.9, 0.9, 0.1])  # class 1: P 1/3, R 1; class 0: P 1, R 1/3
    m = binary_metrics(y, p)
    assert m["f1"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.5) / 2)


def test_single_class_subject_gives_none_not_nan():
    m = binary_metrics(np.zeros(5, int), np.array([0.1, 0.2, 0.3, 0.2, 0.1]))
    assert m["f1"] is None and m["macro_f1"] is None  # class 1 neither present nor predicted
    assert m["roc_auc"] is None and m["pr_auc"] is None and m["mcc"] is None
    assert m["accuracy"] == 1.0
    m = binary_metrics(np.zeros(4, int), np.array([0.9, 0.2, 0.3, 0.2]))
    assert m["f1"] == 0.0 and m["macro_f1"] == pytest.approx((0 + 6 / 7) / 2)


def test_summarise_counts_undefined():
    s = summarise([0.5, None, 0.7])
    assert s["mean"] == pytest.approx(0.6)
    assert s["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert (s["n"], s["undefined"]) == (2, 1)
    assert summarise([None])["mean"] is None


def test_per_subject_and_bad_input():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.1, 0.2, 0.8])
    out = per_subject_metrics(y, p, np.array(["a", "a", "b", "b"]))
    assert out["a"]["accuracy"] == 1.0 and out["b"]["accuracy"] == 0.0
    with pytest.raises(ValueError, match="0 or 1"):
        binary_metrics(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="not finite"):
        binary_metrics(np.array([0, 1]), np.array([0.1, np.nan]))


scores = st.lists(st.integers(0, 6), min_size=2, max_size=30)  # few values: many ties


@settings(max_examples=60, deadline=None)
@given(scores, st.data())
def test_roc_auc_is_the_pairwise_probability(raw, data):
    y = np.array(data.draw(st.lists(st.integers(0, 1), min_size=len(raw), max_size=len(raw))))
    s = np.array(raw, dtype=float)
    pos, neg = s[y == 1], s[y == 0]
    expected = None
    if len(pos) and len(neg):
        wins = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
        expected = wins / (len(pos) * len(neg))
    got = roc_auc(y, s)
    assert got == pytest.approx(expected) if expected is not None else got is None


@settings(max_examples=60, deadline=None)
@given(scores, st.data())
def test_average_precision_by_definition(raw, data):
    y = np.array(data.draw(st.lists(st.integers(0, 1), min_size=len(raw), max_size=len(raw))))
    s = np.array(raw, dtype=float)
    if y.sum() == 0:
        assert average_precision(y, s) is None
        return
    expected, previous_recall = 0.0, 0.0
    for threshold in sorted(set(raw), reverse=True):  # every distinct score is one threshold
        chosen = s >= threshold
        recall = (chosen & (y == 1)).sum() / y.sum()
        expected += (recall - previous_recall) * (chosen & (y == 1)).sum() / chosen.sum()
        previous_recall = recall
    assert average_precision(y, s) == pytest.approx(expected)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(1, 98)), min_size=2, max_size=40))
def test_swapping_classes_keeps_macro_f1_mcc_and_auc(pairs):
    # scores on a 1/100 grid, off the 0.5 threshold: 1 - p keeps ties and order exactly
    y = np.array([a for a, _ in pairs])
    p = np.array([(b + (b >= 50)) / 100 for _, b in pairs])
    a, b = binary_metrics(y, p), binary_metrics(1 - y, 1 - p)
    assert a["accuracy"] == pytest.approx(b["accuracy"])
    for key in ("macro_f1", "mcc", "roc_auc"):
        assert (a[key] is None) == (b[key] is None)
        if a[key] is not None:
            assert a[key] == pytest.approx(b[key])
    if a["mcc"] is not None:
        assert -1 - 1e-12 <= a["mcc"] <= 1 + 1e-12


@pytest.mark.parametrize("seed", range(5))
def test_binary_metrics_equal_scikit_learn(seed):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    prob = np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1)
    pred = (prob >= 0.5).astype(int)
    m = binary_metrics(y, prob)
    assert m["f1"] == pytest.approx(sk.f1_score(y, pred))
    assert m["macro_f1"] == pytest.approx(sk.f1_score(y, pred, average="macro"))
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert m["mcc"] == pytest.approx(sk.matthews_corrcoef(y, pred))
    assert m["roc_auc"] == pytest.approx(sk.roc_auc_score(y, prob))
    assert m["pr_auc"] == pytest.approx(sk.average_precision_score(y, prob))


@pytest.mark.parametrize("seed", range(5))
def test_multiclass_metrics_equal_scikit_learn(seed):
    from poolwise.pain.metrics import multiclass_metrics

    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    k = 4
    y = rng.integers(0, k, 400)
    logits = rng.normal(0, 1, (400, k))
    logits[np.arange(400), y] += 1.0
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = prob.argmax(1)
    m = multiclass_metrics(y, prob)
    np.testing.assert_allclose(m["f1_per_class"], sk.f1_score(y, pred, average=None))
    assert m["macro_f1"] == pytest.approx(sk.f1_score(y, pred, average="macro"))
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, pred))
    assert m["mcc"] == pytest.approx(sk.matthews_corrcoef(y, pred))
    assert m["roc_auc"] == pytest.approx(sk.roc_auc_score(y, prob, multi_class="ovr"))
    assert m["pr_auc"] == pytest.approx(
        sk.average_precision_score(np.eye(k)[y], prob, average="macro"))


def test_multiclass_metrics_by_hand_and_undefined_values():
    from poolwise.pain.metrics import multiclass_metrics

    # true 0 0 1 1 2 2, predicted 0 1 1 1 2 0: diag 1, 2, 1 of rows 2, 2, 2, columns 2, 3, 1
    prob = np.eye(3)[[0, 1, 1, 1, 2, 0]]
    m = multiclass_metrics([0, 0, 1, 1, 2, 2], prob)
    assert m["f1_per_class"] == pytest.approx([2 / 4, 4 / 5, 2 / 3])
    assert m["accuracy"] == pytest.approx(4 / 6) and m["balanced_accuracy"] == pytest.approx(4 / 6)
    # R_K = (c s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) = (24 - 12) / sqrt((36 - 14)(36 - 12))
    assert m["mcc"] == pytest.approx(12 / math.sqrt(22 * 24))
    one_class = multiclass_metrics([1, 1], np.eye(3)[[1, 2]])
    assert one_class["mcc"] is None and one_class["roc_auc"] is None
    assert one_class["macro_f1"] is None and one_class["f1_per_class"][0] is None
    with pytest.raises(ValueError, match=r"labels must be class indices 0..2"):
        multiclass_metrics([3], np.eye(3)[[0]])
