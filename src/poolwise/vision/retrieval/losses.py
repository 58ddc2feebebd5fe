"""Metric-learning losses from pytorch-metric-learning for ``vision train --loss``.

``multi_similarity`` (Wang et al., CVPR 2019) and ``proxy_anchor`` (Kim et al., CVPR 2020) act
on the pooled embedding (``forward_head(pre_logits=True)``) with the labels of a batch drawn by
pytorch-metric-learning's ``MPerClassSampler`` (``m_per_class`` images of each of
``batch_size / m_per_class`` classes). Proxy Anchor's proxies are parameters of the loss; they
train in an optimizer group of their own (no weight decay, ``proxy_lr_mult`` times the lr, the
recipe of its paper) and are checkpointed with the run. The classifier head is not trained by
these losses, so runs report retrieval metrics, not accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn
from torch.utils.data import Sampler

LOSSES = ("cross_entropy", "multi_similarity", "proxy_anchor")


def create_metric_loss(name: str, *, num_classes: int, embedding_size: int) -> nn.Module:
    """The pytorch-metric-learning loss named ``name`` (its published default settings).

    Raises:
        ValueError: for a name that is not a metric-learning loss of :data:`LOSSES`.
        OSError: when pytorch-metric-learning is not installed (naming the extra).
    """
    if name not in LOSSES[1:]:
        raise ValueError(f"loss {name!r} is not one of {', '.join(LOSSES)}")
    try:
        from pytorch_metric_learning import losses
    except ImportError as error:
        raise OSError("--loss multi_similarity / proxy_anchor need pytorch-metric-learning: "
                      "pip install 'poolwise[metric]'") from error
    if name == "multi_similarity":
        return losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)
    return losses.ProxyAnchorLoss(num_classes=num_classes, embedding_size=embedding_size,
                                  margin=0.1, alpha=32)


def class_balanced_sampler(labels: Sequence[int] | np.ndarray, m_per_class: int,
                           batch_size: int) -> Sampler:
    """pytorch-metric-learning's ``MPerClassSampler`` over one epoch of ``labels``.

    Raises:
        ValueError: when ``batch_size`` is not a multiple of ``m_per_class`` or needs more
            classes than the data has.
    """
    from pytorch_metric_learning.samplers import MPerClassSampler

    n_classes = len(set(int(v) for v in labels))
    if batch_size % m_per_class:
        raise ValueError(f"--batch-size {batch_size} must be a multiple of --m-per-class "
                         f"{m_per_class}")
    if batch_size // m_per_class > n_classes:
        raise ValueError(f"--batch-size {batch_size} / --m-per-class {m_per_class} = "
                         f"{batch_size // m_per_class} classes per batch, but the data has "
                         f"{n_classes}")
    length = max(batch_size, len(labels) // batch_size * batch_size)
    return MPerClassSampler(labels, m_per_class, batch_size=batch_size,
                            length_before_new_iter=length)
