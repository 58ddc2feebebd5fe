"""Retrieval metrics of embeddings (queries = references, the query itself excluded).

Cosine similarity of L2-normalised embeddings ranks the references of each query. With ``R``
the number of other items that share the query's label and ``rel(i)`` = 1 when the i-th
nearest neighbour shares it:

- Recall@K = 1 if any of the K nearest neighbours shares the label, averaged over queries
  (the metric-learning convention of CUB/Cars/SOP papers, not the IR recall).
- R-precision = (1/R) * sum_{i<=R} rel(i).
- mAP@R = (1/R) * sum_{i<=R} P(i) * rel(i), with P(i) the precision of the first i neighbours
  (Musgrave et al., "A Metric Learning Reality Check", 2020).

Queries without any other item of their label are left out of every metric (and counted).
Similarities are computed in chunks of queries, so memory is ``chunk x N`` rather than
``N x N``: 100k embeddings fit in a few hundred MB.
"""

from __future__ import annotations

import torch
from torch import Tensor


def retrieval_metrics(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ks: tuple[int, ...] | None = None,
    max_chunk_elements: int = 2**25,
) -> dict[str, float | int]:
    """Recall@K for each K, R-precision and mAP@R; see the module docstring.

    ``ks`` defaults to those of 1, 2, 4, 8 below N (every query has N - 1 neighbours); a K given
    explicitly outside [1, N - 1] is an error.

    Returns:
        ``{"recall@1": ..., "r_precision": ..., "map@r": ..., "queries": n_used,
        "queries_without_match": n_left_out}``.
    """
    if embeddings.ndim != 2 or labels.ndim != 1 or len(labels) != len(embeddings):
        raise ValueError(
            f"expected embeddings (N, D) and labels (N,), got {tuple(embeddings.shape)} and "
            f"{tuple(labels.shape)}"
        )
    n = len(labels)
    if n < 2:
        raise ValueError(f"need at least 2 embeddings, got {n}")
    if ks is None:
        ks = tuple(k for k in (1, 2, 4, 8) if k < n)
    if any(k < 1 or k >= n for k in ks):
        raise ValueError(f"every K must be in [1, {n - 1}], got {ks}")
    emb = torch.nn.functional.normalize(embeddings.float(), dim=1)
    labels = labels.long()
    counts = torch.bincount(labels - labels.min())
    r_all = counts[labels - labels.min()] - 1  # other items with the query's label
    r_max = int(r_all.max())
    depth = max(max(ks), r_max)
    chunk = max(1, min(n, max_chunk_elements // n))
    hits = {k: 0.0 for k in ks}
    r_prec = map_r = 0.0
    used = 0
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        sim = emb[start:stop] @ emb.T
        sim[torch.arange(stop - start), torch.arange(start, stop)] = -float("inf")
        order = sim.topk(depth, dim=1).indices
        rel = (labels[order] == labels[start:stop, None]).double()  # (q, depth)
        r = r_all[start:stop]
        valid = r > 0
        used += int(valid.sum())
        for k in ks:
            hits[k] += float((rel[:, :k].amax(dim=1) * valid).sum())
        positions = torch.arange(1, depth + 1, dtype=torch.float64)
        within_r = positions[None] <= r[:, None]
        rel_r = rel * within_r
        denom = r.clamp(min=1).double()
        r_prec += float((rel_r.sum(dim=1) / denom * valid).sum())
        precision_at_i = rel_r.cumsum(dim=1) / positions[None]
        map_r += float(((precision_at_i * rel_r).sum(dim=1) / denom * valid).sum())
    if used == 0:
        raise ValueError("no query has another item with its label")
    out: dict[str, float | int] = {f"recall@{k}": hits[k] / used for k in ks}
    out["r_precision"] = r_prec / used
    out["map@r"] = map_r / used
    out["queries"] = used
    out["queries_without_match"] = n - used
    return out
