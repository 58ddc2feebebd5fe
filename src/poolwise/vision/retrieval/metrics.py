"""Retrieval metrics of embeddings (queries = references, the query itself excluded).

Cosine similarity of L2-normalised embeddings ranks the references of each query. With ``R``
the number of other items that share the query's label and ``rel(i)`` = 1 when the i-th
nearest neighbour shares it:

- Recall@K = 1 if any of the K nearest neighbours shares the label, averaged over queries
  (the metric-learning convention of CUB/Cars/SOP papers, not the IR recall).
- R-precision = (1/R) * sum_{i<=R} rel(i).
- mAP@R = (1/R) * sum_{i<=R} P(i) * rel(i), with P(i) the precision of the first i neighbours
  (Musgrave et al., "A Metric Learning Reality Check", 2020).

With a separate gallery (query/gallery splits such as In-Shop), each query ranks the gallery
only, and ``R`` is the number of gallery items with its label.

Queries without any other item of their label are left out of every metric (and counted).
Similarities are computed in chunks of queries, so memory is ``chunk x N`` rather than
``N x N``: 100k embeddings fit in a few hundred MB.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_pair(embeddings: Tensor | None, labels: Tensor | None, what: str) -> None:
    if embeddings is None or labels is None or embeddings.ndim != 2 or labels.ndim != 1 or \
            len(labels) != len(embeddings):
        shapes = [None if t is None else tuple(t.shape) for t in (embeddings, labels)]
        raise ValueError(f"expected {what} (N, D) and labels (N,), got {shapes[0]} and "
                         f"{shapes[1]}")


def retrieval_metrics(
    embeddings: Tensor,
    labels: Tensor,
    *,
    gallery: Tensor | None = None,
    gallery_labels: Tensor | None = None,
    ks: tuple[int, ...] | None = None,
    max_chunk_elements: int = 2**25,
) -> dict[str, float | int]:
    """Recall@K for each K, R-precision and mAP@R; see the module docstring.

    Without ``gallery`` every embedding queries all the others (the CUB/Cars/SOP protocol);
    with ``gallery`` and ``gallery_labels`` the embeddings are queries ranked against the
    gallery only (the In-Shop protocol), and R counts the query's label in the gallery.
    ``ks`` defaults to those of 1, 2, 4, 8 below the number of references each query ranks; a
    K given explicitly outside that range is an error.

    Everything runs on the embeddings' device (the training device, where ``evaluate`` puts
    them): queries in blocks of ``max_chunk_elements / N`` rows, each block's similarities to
    all references and their top-``max(K, R)`` computed there.

    Returns:
        ``{"recall@1": ..., "r_precision": ..., "map@r": ..., "queries": n_used,
        "queries_without_match": n_left_out}``.
    """
    _check_pair(embeddings, labels, "embeddings")
    if gallery is not None or gallery_labels is not None:
        _check_pair(gallery, gallery_labels, "gallery")
    same = gallery is None
    queries = torch.nn.functional.normalize(embeddings.float(), dim=1)
    refs = queries if same else torch.nn.functional.normalize(gallery.float(), dim=1)
    if not same and refs.shape[1] != queries.shape[1]:
        raise ValueError(f"queries have {queries.shape[1]} dimensions, the gallery "
                         f"{refs.shape[1]}")
    n, n_ref = len(labels), len(refs)
    ranked = n_ref - 1 if same else n_ref  # references each query ranks
    if ranked < 1:
        raise ValueError(f"need at least 2 embeddings, got {n}" if same
                         else "the gallery is empty")
    if ks is None:
        ks = tuple(k for k in (1, 2, 4, 8) if k <= ranked)
    if any(k < 1 or k > ranked for k in ks):
        raise ValueError(f"every K must be in [1, {ranked}], got {ks}")
    device = queries.device
    values, index = torch.unique(torch.cat([labels.long().to(device), (labels if same else
                                                            gallery_labels).long().to(device)]),
                                 return_inverse=True)
    query_class, ref_class = index[:n], index[n:]
    counts = torch.bincount(ref_class, minlength=len(values))
    r_all = counts[query_class] - (1 if same else 0)  # references with the query's label
    depth = min(max(max(ks), int(r_all.max())), ranked)
    chunk = max(1, min(n, max_chunk_elements // n_ref))
    hits = {k: 0.0 for k in ks}
    r_prec = map_r = 0.0
    used = 0
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        sim = queries[start:stop] @ refs.T
        if same:
            rows = torch.arange(stop - start, device=sim.device)
            sim[rows, rows + start] = -float("inf")
        order = sim.topk(depth, dim=1).indices
        rel = (ref_class[order] == query_class[start:stop, None]).double()  # (q, depth)
        r = r_all[start:stop]
        valid = r > 0
        used += int(valid.sum())
        for k in ks:
            hits[k] += float((rel[:, :k].amax(dim=1) * valid).sum())
        positions = torch.arange(1, depth + 1, dtype=torch.float64, device=rel.device)
        within_r = positions[None] <= r[:, None]
        rel_r = rel * within_r
        denom = r.clamp(min=1).double()
        r_prec += float((rel_r.sum(dim=1) / denom * valid).sum())
        precision_at_i = rel_r.cumsum(dim=1) / positions[None]
        map_r += float(((precision_at_i * rel_r).sum(dim=1) / denom * valid).sum())
    if used == 0:
        raise ValueError("no query has another item with its label" if same
                         else "no query's label is in the gallery")
    out: dict[str, float | int] = {f"recall@{k}": hits[k] / used for k in ks}
    out["r_precision"] = r_prec / used
    out["map@r"] = map_r / used
    out["queries"] = used
    out["queries_without_match"] = n - used
    return out
