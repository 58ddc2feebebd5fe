"""Class-disjoint retrieval on any image data: the layouts the benchmarks ship (CUB/Cars/SOP:
train/ and test/ with disjoint classes; In-Shop: query/ and gallery/), or a half split of the
classes of any other data set; see :func:`run_retrieval`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from poolwise._io import write_json
from poolwise.vision.data import load_images
from poolwise.vision.retrieval.metrics import retrieval_metrics
from poolwise.vision.retrieval.whitening import learn_whitening
from poolwise.vision.train.classification import load_trained, run_classification
from poolwise.vision.train.evaluate import embed
from poolwise.vision.train.spec import RunSpec

TRAINING_KEYS = ("parameters", "p", "train_seconds", "groups")


def split_classes(num_classes: int) -> tuple[list[int], list[int]]:
    """First half (training) and second half (held out) of the class indices."""
    if num_classes < 4:
        raise ValueError(f"class-disjoint retrieval needs at least 4 classes, got {num_classes}")
    half = num_classes // 2
    return list(range(half)), list(range(half, num_classes))


def run_retrieval(spec: RunSpec, run_dir: str | Path, *, whitening: bool = False,
                  **train_kwargs: Any) -> dict:
    """Trains in ``run_dir/train`` and writes ``run_dir/retrieval.json`` with the metrics on
    unseen and on seen classes.

    The data's layout decides the protocol (``layout`` in the result): a tree shipped with
    disjoint classes (``retrieval``: CUB/Cars/SOP) trains on all of ``train/`` and scores
    ``test/``, every image querying the others; a ``query/`` + ``gallery/`` tree (In-Shop)
    trains on ``train/`` and ranks the gallery for every query; any other data trains on the
    first half of the classes and scores the test images of the other half. ``seen`` scores
    the test (held-out) images of the training classes (None where no class has two of them).
    With ``whitening``, also after a learned whitening (:mod:`poolwise.vision.retrieval.whitening`)
    fitted on the training images' embeddings, as ``unseen_whitened`` / ``seen_whitened``.
    ``training`` repeats the training run's size, learned p and time (``TRAINING_KEYS``).
    """
    run_dir = Path(run_dir)
    spec.check()
    splits = load_images(spec.data, image_size=spec.model_kwargs.get("img_size"))
    layout = ("query-gallery" if "query" in splits else
              "disjoint-classes" if "retrieval" in splits else "half-split")
    if layout == "half-split":
        seen, unseen = split_classes(len(splits["train"].classes))
        spec = dataclasses.replace(spec, classes=seen)
    trained = run_classification(spec, run_dir / "train", **train_kwargs)
    model, _ = load_trained(run_dir / "train")
    train, test = splits["train"], splits["test"]
    if layout == "half-split":
        train = train.subset_classes(seen)
        evaluated = {"unseen": (test.subset_classes(unseen), None),
                     "seen": (test.subset_classes(seen), None)}
        names = {"unseen": [test.classes[c] for c in unseen],
                 "seen": [test.classes[c] for c in seen]}
    else:
        unseen_split = splits["query"] if layout == "query-gallery" else splits["retrieval"]
        evaluated = {"unseen": (unseen_split, splits.get("gallery")), "seen": (test, None)}
        names = {"unseen": sorted(set(unseen_split.classes[c]
                                      for c in np.unique(unseen_split.labels))),
                 "seen": list(test.classes)}
    result = {"spec": spec.to_json(), "layout": layout,
              "seen_classes": names["seen"], "unseen_classes": names["unseen"],
              "training": {k: trained.get(k) for k in TRAINING_KEYS}}
    white = None
    if whitening:
        fitted = embed(model, train)
        white = learn_whitening(fitted["embedding"], fitted["labels"])
    for name, (queries, gallery) in evaluated.items():
        if gallery is None and np.bincount(queries.labels).max(initial=0) < 2:
            result[name] = None  # no class with two images: nothing to retrieve
            continue
        out = embed(model, queries)
        ref = None if gallery is None else embed(model, gallery)
        views = {"": lambda emb: emb, **({} if white is None else {"_whitened": white})}
        for suffix, view in views.items():
            extra = {} if ref is None else {"gallery": view(ref["embedding"]),
                                            "gallery_labels": ref["labels"]}
            result[name + suffix] = retrieval_metrics(view(out["embedding"]), out["labels"],
                                                      **extra)
    write_json(run_dir / "retrieval.json", result)
    return result
