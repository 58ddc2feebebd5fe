"""A pooled model on a split: its test-time outputs (:func:`embed`) and its scores
(:func:`evaluate`)."""

from __future__ import annotations

import torch
from torch import nn

from poolwise.runs.loop import autocast
from poolwise.vision.data import ImageSplit
from poolwise.vision.models import PooledModel
from poolwise.vision.retrieval.metrics import retrieval_metrics
from poolwise.vision.train.dependence import group_dependence
from poolwise.vision.train.inputs import make_loader


@torch.no_grad()
def embed(model: PooledModel, split: ImageSplit, *, batch_size: int = 256,
          device: torch.device | None = None, amp: str = "none",
          workers: int = 0) -> dict[str, torch.Tensor]:
    """Test-time outputs of every image: ``pooled`` (the pool's output, before any norm),
    ``embedding`` (``forward_head(pre_logits=True)``), ``logits`` and ``labels``."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = {"pooled": [], "embedding": [], "logits": [], "labels": []}
    for images, labels in make_loader(split, batch_size, shuffle=False, workers=workers):
        with autocast(device, amp):
            features = model.forward_features(images.to(device))
            pooled = model.pool(features)
            embedding = model.head_from_pooled(pooled, pre_logits=True)
            logits = model.get_classifier()(embedding)
        for key, value in (("pooled", pooled), ("embedding", embedding), ("logits", logits)):
            out[key].append(value.float().cpu())
        out["labels"].append(torch.as_tensor(labels))
    model.train(was_training)
    return {k: torch.cat(v) for k, v in out.items()}


def evaluate(model: PooledModel, split: ImageSplit, *, batch_size: int = 256,
             device: torch.device | None = None, amp: str = "none",
             retrieval: bool = True, workers: int = 0) -> dict:
    """Accuracy and loss; with ``retrieval``, Recall@K / R-precision / mAP@R of the embeddings
    and the head-wise dependence (mean pairwise linear CKA between the pool's G groups)."""
    out = embed(model, split, batch_size=batch_size, device=device, amp=amp, workers=workers)
    loss = nn.functional.cross_entropy(out["logits"], out["labels"]).item()
    result = {"accuracy": float((out["logits"].argmax(1) == out["labels"]).float().mean()),
              "loss": loss, "n": len(out["labels"])}
    if retrieval:  # on the training device
        where = device or next(model.parameters()).device
        result["retrieval"] = retrieval_metrics(out["embedding"].to(where),
                                                out["labels"].to(where))
        groups = model.num_heads or model.groups
        if groups and groups > 1:
            result["dependence"] = group_dependence(out["pooled"], groups)["mean"]
    return result
