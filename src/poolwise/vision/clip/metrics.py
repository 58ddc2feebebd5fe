"""Image-text retrieval and zero-shot metrics with an explicit image-to-captions map.

- ``image->text R@K``: for each image, a hit if any of its captions is among the K captions most
  similar to it;
- ``text->image R@K``: for each caption, a hit if any image it describes is among the K images
  most similar to it;
- zero-shot accuracy: each class's text embedding is the normalised mean over prompt templates;
  an image is assigned the most similar class.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _recall(sim: Tensor, positives: list[list[int]], ks: tuple[int, ...]) -> dict[int, float]:
    depth = min(max(ks), sim.shape[1])
    top = sim.topk(depth, dim=1).indices
    hit_rank = torch.full((sim.shape[0],), depth, dtype=torch.long)
    for row, pos in enumerate(positives):
        if not pos:
            raise ValueError(f"row {row} has no positive")
        match = torch.isin(top[row], torch.as_tensor(pos)).nonzero()
        if len(match):
            hit_rank[row] = int(match[0])
    return {k: float((hit_rank < k).float().mean()) for k in ks}


def image_text_recall(image_emb: Tensor, text_emb: Tensor, image_to_captions: list[list[int]],
                      ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """``image->text R@K`` and ``text->image R@K`` (cosine similarity)."""
    if len(image_to_captions) != len(image_emb):
        raise ValueError(f"{len(image_emb)} images but a map for {len(image_to_captions)}")
    image_emb = torch.nn.functional.normalize(image_emb.float(), dim=1)
    text_emb = torch.nn.functional.normalize(text_emb.float(), dim=1)
    sim = image_emb @ text_emb.T
    caption_to_images: list[list[int]] = [[] for _ in range(len(text_emb))]
    for image, captions in enumerate(image_to_captions):
        for c in captions:
            caption_to_images[c].append(image)
    described = [i for i, imgs in enumerate(caption_to_images) if imgs]
    i2t = _recall(sim, image_to_captions, ks)
    t2i = _recall(sim.T[described], [caption_to_images[i] for i in described], ks)
    out = {f"image->text R@{k}": v for k, v in i2t.items()}
    out.update({f"text->image R@{k}": v for k, v in t2i.items()})
    return out


def zero_shot_accuracy(image_emb: Tensor, labels: Tensor, class_text_emb: Tensor) -> float:
    """``class_text_emb``: (classes, templates, D) embeddings of the prompts."""
    classes = torch.nn.functional.normalize(
        torch.nn.functional.normalize(class_text_emb.float(), dim=-1).mean(dim=1), dim=-1)
    image_emb = torch.nn.functional.normalize(image_emb.float(), dim=1)
    predicted = (image_emb @ classes.T).argmax(dim=1)
    return float((predicted == labels.long()).float().mean())
