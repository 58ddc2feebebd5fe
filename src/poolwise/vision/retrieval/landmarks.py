"""A trained run evaluated on the revisited Oxford / Paris images (ROxford5k, RParis6k).

The database images ``imlist`` and the queries ``qimlist`` of the ground truth are read from
one folder as ``<name><extension>`` (``.jpg`` as the data sets ship). Every query is cropped to
its box ``bbx`` first, as the protocol prescribes. All images then go through the run's timm
eval transform: the model's mean, std and interpolation, resized and centre-cropped to its
input size. The embedding is ``forward_head(pre_logits=True)``, L2-normalised, and queries are
ranked against the database by cosine similarity. The metrics are
:func:`poolwise.vision.retrieval.revisited.revisited_metrics`.

A ViT of fixed input size sees each image at that one size; the protocol's reference
evaluations feed whole images at up to 1024 pixels to CNNs, so numbers are comparable between
poolwise runs, not with published CNN tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from poolwise._io import write_json, write_text
from poolwise._tables import markdown_table, number
from poolwise.vision.data import ImageSplit
from poolwise.vision.data.image_lists import ImageFiles, missing_files
from poolwise.vision.retrieval.revisited import (
    KAPPAS,
    SETTINGS,
    load_ground_truth,
    revisited_metrics,
)


def evaluate_revisited(run_dir: str | Path, images: str | Path, ground_truth: str | Path, *,
                       extension: str = ".jpg", batch_size: int = 32,
                       ema: bool = False) -> dict:
    """Easy / Medium / Hard mAP and mP@k of a finished classification run, or of a
    retrieval run (its model is in ``run_dir/train``).

    Raises:
        FileNotFoundError: naming the ground-truth file and the first images it names that are
            not in ``images``.
        ValueError: for a ground-truth file not in the documented JSON form, or a run trained
            on one-channel images (the landmark images are colour).
    """
    from poolwise.vision.train.classification import load_trained
    from poolwise.vision.train.evaluate import embed
    from poolwise.vision.train.inputs import input_size, timm_transform

    images, ground_truth = Path(images), Path(ground_truth)
    table = load_ground_truth(ground_truth)
    database = [images / f"{name}{extension}" for name in table["imlist"]]
    queries = [images / f"{name}{extension}" for name in table["qimlist"]]
    missing_files(database + queries, f"{ground_truth} (images read from {images})")
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file() and (run_dir / "train" / "run.json").is_file():
        run_dir = run_dir / "train"  # a `vision retrieval` run trains there
    model, spec = load_trained(run_dir, ema=ema)
    channels = _input_channels(model)
    if channels != 3:
        raise ValueError(f"{run_dir}: the model takes {channels}-channel images; the revisited "
                         "Oxford/Paris images are colour (train on RGB data)")
    transform = timm_transform(spec, model, training=False)
    size = input_size(spec, model)
    boxes = [entry.get("bbx") for entry in table["gnd"]]

    def embeddings(paths: list[Path], crop: list | None) -> torch.Tensor:
        labels = np.zeros(len(paths), dtype=np.int64)
        split = ImageSplit(ImageFiles(paths, labels, transform, crop), labels, ("image",), 3,
                           size, f"revisited:{images}")
        return torch.nn.functional.normalize(embed(model, split, batch_size=batch_size)
                                             ["embedding"], dim=1)

    similarity = embeddings(queries, boxes) @ embeddings(database, None).T
    return {
        "run": str(run_dir),
        "ground_truth": str(ground_truth),
        "images": str(images),
        "queries": len(queries),
        "database": len(database),
        "embedding": "forward_head(pre_logits=True), L2-normalised; cosine similarity",
        "query_crop": "bbx",
        "ema": ema,
        "metrics": revisited_metrics(similarity.numpy(), table),
    }


def _input_channels(model: torch.nn.Module) -> int:
    """The channel count of the model's first convolution (the patch embedding of a ViT)."""
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    return first.in_channels


def write_revisited_report(out: str | Path, result: dict, run_dir: str | Path,
                           command: str) -> str:
    """``revisited.json`` (``result`` of :func:`evaluate_revisited`) and ``revisited.md`` (its
    table of mAP and mP@k per setting, with the command that made it) in ``out``; returns the
    table."""
    rows = [[setting, number(m["map"]), *(number(m[f"mp@{k}"]) for k in KAPPAS),
             str(m["queries"]), str(m["queries_without_positive"])]
            for setting, m in ((s, result["metrics"][s]) for s in SETTINGS)]
    table = markdown_table(["setting", "mAP", *(f"mP@{k}" for k in KAPPAS), "queries",
                            "queries without a positive"], rows)
    text = (f"# Revisited Oxford/Paris: {run_dir}\n\nMade with: `{command}`\n\n"
            f"{result['queries']} queries (cropped to their boxes) against "
            f"{result['database']} database images; {result['embedding']}.\n\n{table}\n")
    out = Path(out)
    write_json(out / "revisited.json", result)
    write_text(out / "revisited.md", text)
    return table
