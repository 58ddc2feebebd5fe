import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from poolwise.vision.retrieval.metrics import retrieval_metrics


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


def assert_matches_pml(ours, queries, q_labels, refs, r_labels, *, ref_includes_query):
    """poolwise's metrics equal pytorch-metric-learning's AccuracyCalculator (exact cosine)."""
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    calc = AccuracyCalculator(include=("precision_at_1", "r_precision",
                                       "mean_average_precision_at_r"),
                              knn_func=CustomKNN(CosineSimilarity()))
    theirs = calc.get_accuracy(queries, q_labels, refs, r_labels,
                               ref_includes_query=ref_includes_query)
    assert ours["recall@1"] == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(theirs["r_precision"], abs=1e-6)
    assert ours["map@r"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(20, 200), classes=st.integers(2, 8))
def test_agrees_with_pytorch_metric_learning(seed, n, classes):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % classes)[torch.randperm(n, generator=g)]  # >= 2 per class
    emb = torch.randn(n, 8, generator=g) + 0.7 * torch.nn.functional.one_hot(labels, 8)
    assert_matches_pml(retrieval_metrics(emb, labels), emb, labels, emb, labels,
                       ref_includes_query=True)


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


def test_query_gallery_by_hand():
    # queries q0 (label 0), q1 (label 1); gallery g0 (0), g1 (1), g2 (0); 1-D embeddings on a
    # circle so the cosine order is clear: q0 ranks g1, g0, g2; q1 ranks g1, g2, g0
    angle = torch.tensor
    queries = torch.stack([torch.cos(angle([0.0, 2.0])), torch.sin(angle([0.0, 2.0]))], 1)
    gallery = torch.stack([torch.cos(angle([0.5, 0.1, 1.2])), torch.sin(angle([0.5, 0.1, 1.2]))],
                          1)
    m = retrieval_metrics(queries, torch.tensor([0, 1]), gallery=gallery,
                          gallery_labels=torch.tensor([0, 1, 0]), ks=(1, 2))
    # q0: R = 2, ranking g1 (miss), g0 (hit), g2 (hit): R-precision 1/2, AP@R = (1/2)(1/2) = 0.25
    # q1: R = 1, ranking g2 (by angle 2.0: g2 at 1.2 is nearest), miss: 0
    assert m["recall@1"] == pytest.approx(0.0) and m["recall@2"] == pytest.approx(0.5)
    assert m["r_precision"] == pytest.approx(0.25) and m["map@r"] == pytest.approx(0.125)
    assert m["queries"] == 2


@pytest.mark.parametrize("seed", range(3))
def test_query_gallery_agrees_with_pytorch_metric_learning(seed):
    g = torch.Generator().manual_seed(seed)
    q_labels = torch.arange(60) % 6
    r_labels = (torch.arange(90) % 6)[torch.randperm(90, generator=g)]
    queries = torch.randn(60, 8, generator=g) + 0.8 * torch.nn.functional.one_hot(q_labels, 8)
    gallery = torch.randn(90, 8, generator=g) + 0.8 * torch.nn.functional.one_hot(r_labels, 8)
    ours = retrieval_metrics(queries, q_labels, gallery=gallery, gallery_labels=r_labels)
    assert_matches_pml(ours, queries, q_labels, gallery, r_labels, ref_includes_query=False)
    with pytest.raises(ValueError, match="expected gallery"):
        retrieval_metrics(queries, q_labels, gallery=gallery)
