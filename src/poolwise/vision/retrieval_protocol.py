"""Class-disjoint retrieval (the CUB/Cars/SOP protocol) on any image data.

The embedding is trained by classification on the first half of the classes; retrieval is then
measured on the test images of the other half (classes never seen in training) and, for
reference, on the test images of the seen classes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from poolwise._io import write_json
from poolwise.vision.data import load_images
from poolwise.vision.retrieval import retrieval_metrics
from poolwise.vision.train import RunSpec, embed, load_trained, run_classification
from poolwise.vision.whitening import learn_whitening


def split_classes(num_classes: int) -> tuple[list[int], list[int]]:
    """First half (training) and second half (held out) of the class indices."""
    if num_classes < 4:
        raise ValueError(f"class-disjoint retrieval needs at least 4 classes, got {num_classes}")
    half = num_classes // 2
    return list(range(half)), list(range(half, num_classes))


def run_retrieval(spec: RunSpec, run_dir: str | Path, *, whitening: bool = False,
                  **train_kwargs: Any) -> dict:
    """Trains on the first half of the classes (in ``run_dir/train``) and writes
    ``run_dir/retrieval.json`` with the metrics on held-out and on seen classes; with
    ``whitening``, also after a learned whitening (:mod:`poolwise.vision.whitening`) fitted on
    the training images' embeddings (seen classes only) as ``unseen_whitened`` /
    ``seen_whitened``."""
    run_dir = Path(run_dir)
    splits = load_images(spec.data, image_size=spec.model_kwargs.get("img_size"))
    seen, unseen = split_classes(len(splits["train"].classes))
    spec = dataclasses.replace(spec, classes=seen)
    run_classification(spec, run_dir / "train", **train_kwargs)
    model, _ = load_trained(run_dir / "train")
    test = splits["test"]
    result = {"spec": spec.to_json(), "seen_classes": [test.classes[c] for c in seen],
              "unseen_classes": [test.classes[c] for c in unseen]}
    white = None
    if whitening:
        fitted = embed(model, splits["train"].subset_classes(seen))
        white = learn_whitening(fitted["embedding"], fitted["labels"])
    for name, classes in (("unseen", unseen), ("seen", seen)):
        out = embed(model, test.subset_classes(classes))
        result[name] = retrieval_metrics(out["embedding"], out["labels"])
        if white is not None:
            result[f"{name}_whitened"] = retrieval_metrics(white(out["embedding"]),
                                                           out["labels"])
    write_json(run_dir / "retrieval.json", result)
    return result
