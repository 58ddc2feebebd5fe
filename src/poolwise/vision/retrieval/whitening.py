"""Learned whitening of embeddings, as in GeM retrieval (Radenović et al., TPAMI 2018).

Learned on labelled training embeddings, applied to unseen ones before retrieval:

1. centre on the training mean m;
2. whiten the within-class scatter: W = C_S^(-1/2), C_S the covariance of the embeddings minus
   their class means (the matching pairs' differences, up to a factor of 2);
3. rotate onto the principal axes of the whitened training embeddings, largest variance first
   (keep the first ``dims``);
4. L2-normalise.

So matching images become close in every direction equally, and the directions that separate
classes come first. ``shrinkage`` adds that fraction of the mean eigenvalue of C_S to its
diagonal, so a within-class scatter of low rank (few images per class, more dimensions than
images) still has an inverse square root.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Whitening:
    mean: Tensor  # (D,)
    projection: Tensor  # (D, dims): x -> (x - mean) @ projection

    def __call__(self, embeddings: Tensor) -> Tensor:
        """Whitened, L2-normalised embeddings (N, dims)."""
        out = (embeddings.double() - self.mean) @ self.projection
        return torch.nn.functional.normalize(out, dim=1).to(embeddings.dtype)


def learn_whitening(embeddings: Tensor, labels: Tensor, *, dims: int | None = None,
                    shrinkage: float = 1e-3) -> Whitening:
    """The whitening of :mod:`this module <poolwise.vision.retrieval.whitening>` from
    (N, D) embeddings and their labels.

    Raises:
        ValueError: for fewer than two classes, a class-free scatter (every class a single
            image), or ``dims`` outside [1, D].
    """
    if embeddings.ndim != 2 or len(labels) != len(embeddings):
        raise ValueError(f"expected embeddings (N, D) and labels (N,), got "
                         f"{tuple(embeddings.shape)} and {tuple(labels.shape)}")
    x = torch.nn.functional.normalize(embeddings.double(), dim=1)
    d = x.shape[1]
    dims = d if dims is None else dims
    if not 1 <= dims <= d:
        raise ValueError(f"dims={dims} must be in [1, {d}]")
    classes, index = torch.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError("learned whitening needs at least two classes")
    counts = torch.bincount(index).double()
    means = torch.zeros(len(classes), d, dtype=x.dtype).index_add_(0, index, x) / counts[:, None]
    within = x - means[index]
    if counts.max() < 2:
        raise ValueError("learned whitening needs a class with two or more images")
    scatter = within.T @ within / max(1, int((counts - 1).sum()))
    values, vectors = torch.linalg.eigh(scatter)
    values = values.clamp_min(0) + shrinkage * values.clamp_min(0).mean()
    inverse_root = vectors @ torch.diag(values.rsqrt()) @ vectors.T
    mean = x.mean(0)
    whitened = (x - mean) @ inverse_root
    total = whitened.T @ whitened / max(1, len(x) - 1)
    spread, axes = torch.linalg.eigh(total)
    order = torch.argsort(spread, descending=True)[:dims]
    return Whitening(mean=mean, projection=inverse_root @ axes[:, order])
