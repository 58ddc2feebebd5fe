"""Learned whitening: its defining identities, and its use for retrieval."""

import pytest
import torch

from poolwise.vision.retrieval.metrics import retrieval_metrics
from poolwise.vision.retrieval.whitening import learn_whitening


def classes_with_a_nuisance(n_classes=20, per_class=30, d=16, seed=0):
    """Classes differ in dims 8.., a large within-class nuisance lives in dims 0..7."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.zeros(n_classes, d)
    centres[:, 8:] = torch.randn(n_classes, d - 8, generator=g)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    noise = 0.1 * torch.randn(len(labels), d, generator=g)
    noise[:, :8] *= 40.0  # matching images differ most in the directions that say nothing
    return centres[labels] + noise, labels


def test_whitened_training_embeddings_have_unit_within_class_scatter():
    x, labels = classes_with_a_nuisance()
    w = learn_whitening(x, labels, shrinkage=0.0)
    z = (torch.nn.functional.normalize(x.double(), dim=1) - w.mean) @ w.projection
    means = torch.stack([z[labels == c].mean(0) for c in range(20)])
    within = z - means[labels]
    scatter = within.T @ within / (len(x) - 20)
    torch.testing.assert_close(scatter, torch.eye(16, dtype=torch.float64), atol=1e-8, rtol=0)
    # the total scatter is diagonal, largest first (a rotation onto its principal axes)
    total = torch.cov(z.T)
    off = total - torch.diag(torch.diag(total))
    assert off.abs().max() < 1e-8 and torch.all(torch.diag(total)[:-1] >= torch.diag(total)[1:])


def test_whitening_learned_on_seen_classes_helps_unseen_ones():
    x, labels = classes_with_a_nuisance(n_classes=40)
    seen, unseen = labels < 20, labels >= 20
    w = learn_whitening(x[seen], labels[seen], dims=8)
    raw = retrieval_metrics(x[unseen], labels[unseen])["map@r"]
    whitened = retrieval_metrics(w(x[unseen]), labels[unseen])["map@r"]
    assert w(x[unseen]).shape == (600, 8)
    assert whitened > raw + 0.2


def test_whitening_refuses_what_it_cannot_learn():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="at least two classes"):
        learn_whitening(x, torch.zeros(4))
    with pytest.raises(ValueError, match="two or more images"):
        learn_whitening(x, torch.arange(4))
    with pytest.raises(ValueError, match=r"dims=5 must be in \[1, 3\]"):
        learn_whitening(x, torch.tensor([0, 0, 1, 1]), dims=5)
