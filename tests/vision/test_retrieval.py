import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from poolwise.vision.retrieval import retrieval_metrics


def test_hand_computed_example():
    # angles on the unit circle; labels a a a b b
    angles = torch.tensor([0.0, 0.1, 1.5, 0.25, 3.0])  # labels a a a b b
    emb = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([0, 0, 0, 1, 1])
    m = retrieval_metrics(emb, labels, ks=(1, 2))
    # neighbours by angle distance (R = 2 for a, 1 for b):
    # q0 (a): 0.1 a, 0.25 b, 1.5 a -> rel 1,0: AP@R = (1/1)/2 = 0.5, RP = 1/2, R@1 = 1
    # q1 (a): 0.0 a, 0.25 b, 1.5 a -> rel 1,0: AP@R = 0.5, RP = 1/2, R@1 = 1
    # q2 (a): 0.25 b, 0.1 a, 0.0 a -> rel 0,1: AP@R = (1/2)/2 = 0.25, RP = 1/2, R@2 = 1
    # q3 (b): 0.1 a, 0.0 a, ...    -> rel 0: AP = RP = 0, R@1 = R@2 = 0
    # q4 (b): 1.5 a, 0.25 b        -> rel 0: AP = RP = 0, R@1 = 0, R@2 = 1
    assert m["queries"] == 5 and m["queries_without_match"] == 0
    assert m["recall@1"] == pytest.approx(2 / 5)  # q0, q1
    assert m["recall@2"] == pytest.approx(4 / 5)  # q0, q1, q2, q4
    assert m["r_precision"] == pytest.approx((0.5 + 0.5 + 0.5 + 0 + 0) / 5)
    assert m["map@r"] == pytest.approx((0.5 + 0.5 + 0.25 + 0 + 0) / 5)


def test_perfect_clusters_and_singletons():
    emb = torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9], [-1.0, 0]])
    labels = torch.tensor([0, 0, 1, 1, 2])  # class 2 has no other member
    m = retrieval_metrics(emb, labels, ks=(1,))
    assert m["queries"] == 4 and m["queries_without_match"] == 1
    assert m["recall@1"] == m["r_precision"] == m["map@r"] == 1.0


def test_chunking_gives_the_same_numbers():
    g = torch.Generator().manual_seed(0)
    emb, labels = torch.randn(300, 8, generator=g), torch.randint(0, 6, (300,), generator=g)
    whole = retrieval_metrics(emb, labels)
    chunked = retrieval_metrics(emb, labels, max_chunk_elements=7 * 300)
    assert whole == pytest.approx(chunked)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(20, 200), classes=st.integers(2, 8))
def test_agrees_with_pytorch_metric_learning(seed, n, classes):
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % classes)[torch.randperm(n, generator=g)]  # >= 2 per class
    emb = torch.randn(n, 8, generator=g) + 0.7 * torch.nn.functional.one_hot(labels, 8)
    ours = retrieval_metrics(emb, labels)
    calc = AccuracyCalculator(include=("precision_at_1", "r_precision",
                                       "mean_average_precision_at_r"),
                              knn_func=CustomKNN(CosineSimilarity()))
    theirs = calc.get_accuracy(emb, labels, emb, labels, ref_includes_query=True)
    assert ours["recall@1"] == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(theirs["r_precision"], abs=1e-6)
    assert ours["map@r"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match=r"got \(4, 2\) and \(3,\)"):
        retrieval_metrics(torch.zeros(4, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="every K"):
        retrieval_metrics(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), ks=(4,))
    assert not math.isnan(retrieval_metrics(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]),
                                            ks=(1,))["map@r"])


def test_default_ks_fit_a_small_gallery():
    emb, labels = torch.randn(6, 3), torch.tensor([0, 0, 0, 1, 1, 1])
    m = retrieval_metrics(emb, labels)
    assert {"recall@1", "recall@2", "recall@4"} <= set(m) and "recall@8" not in m
