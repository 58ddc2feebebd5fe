"""Normalisation and the paper's augmentations."""

import math

import numpy as np
import pytest
import torch

from poolwise.pain.augment import (
    BLOCK_FRACTIONS,
    JITTER_STDS,
    apply_zscore,
    augment_batch,
    expand,
    fit_zscore,
    n_variants,
)


def test_zscore_fits_per_channel_and_keeps_constant_channels_finite():
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, (50, 4, 60)).astype(np.float32)
    X[:, 2] = 7.0
    mean, std = fit_zscore(X)
    Z = apply_zscore(X, mean, std)
    assert np.allclose(Z[:, [0, 1, 3]].mean(axis=(0, 2)), 0, atol=1e-5)
    assert np.allclose(Z[:, [0, 1, 3]].std(axis=(0, 2)), 1, atol=1e-4)
    assert std[2] == 1.0 and np.all(Z[:, 2] == 0)
    with pytest.raises(ValueError, match="channels, time"):
        fit_zscore(X[0])


def test_variants_do_what_they_say():
    x = torch.ones(n_variants(), 30, 180)
    out = augment_batch(x, torch.arange(n_variants()), torch.Generator().manual_seed(0))
    assert torch.equal(out[0], x[0])
    for i, std in enumerate(JITTER_STDS, start=1):
        assert (out[i] - 1).std().item() == pytest.approx(std, rel=0.05)
    for i, fraction in enumerate(BLOCK_FRACTIONS, start=1 + len(JITTER_STDS)):
        zeros = out[i] == 0
        channels = zeros.any(1).sum().item()
        frames = zeros.any(0).sum().item()
        assert (channels, frames) == (math.ceil(math.sqrt(fraction) * 30),
                                      math.ceil(math.sqrt(fraction) * 180))
        assert zeros.sum().item() == channels * frames  # one rectangle
        assert torch.all(out[i][~zeros] == 1)
    assert torch.equal(x, torch.ones_like(x))  # out of place


def test_expand_is_seven_fold_and_reproducible():
    X = np.random.default_rng(1).normal(size=(5, 3, 40)).astype(np.float32)
    a, source = expand(X, seed=3)
    b, _ = expand(X, seed=3)
    assert a.shape == (35, 3, 40) and np.array_equal(a, b)
    assert np.array_equal(source, np.tile(np.arange(5), 7))
    assert np.array_equal(a[:5], X)
