"""Class-disjoint retrieval runs (:mod:`poolwise.vision.retrieval.run`)."""

import json

import numpy as np
import pytest
import torch
from _tiny_vit import tiny_spec

from poolwise.vision.retrieval.run import run_retrieval, split_classes
from poolwise.vision.train.spec import RunSpec


def test_class_disjoint_retrieval(tmp_path, capsys):
    torch.set_num_threads(1)
    assert split_classes(10) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])
    result = run_retrieval(tiny_spec(classes=None, epochs=1), tmp_path)
    assert result["unseen_classes"] == ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert result["unseen"]["queries"] == 500 and result["seen"]["queries"] == 500
    # a trained embedding retrieves unseen classes far above chance (1/5 for Recall@1)
    assert result["unseen"]["recall@1"] > 0.4
    saved = json.loads((tmp_path / "retrieval.json").read_text())
    assert saved["spec"]["classes"] == [0, 1, 2, 3, 4]
    assert "unseen_whitened" not in result
    from poolwise.cli import main

    assert main(["vision", "retrieval", "--epochs", "1", "--embed-dim", "24", "--depth", "1",
                 "--num-heads", "2", "--batch-size", "64", "--whitening", "--out",
                 str(tmp_path / "cli")]) == 0
    assert "| unseen, learned whitening (Sandal," in capsys.readouterr().out
    whitened = json.loads((tmp_path / "cli" / "retrieval.json").read_text())
    assert whitened["unseen_whitened"]["queries"] == 500
    assert 0 < whitened["unseen_whitened"]["map@r"] <= 1


@pytest.mark.parametrize("layout,expected", [
    ({"train": ["a", "b", "c"], "test": ["d", "e"]}, "disjoint-classes"),
    ({"train": ["a", "b"], "query": ["x", "y"], "gallery": ["x", "y", "z"]}, "query-gallery"),
])
def test_retrieval_follows_the_shipped_layout(tmp_path, layout, expected):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, classes in layout.items():
        for k, cls in enumerate(classes):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(20 if split == "train" else 4):
                pixels = rng.integers(0, 60, (8, 8, 3)) + 40 * k  # classes differ in brightness
                Image.fromarray(pixels.astype(np.uint8)).save(
                    tmp_path / "data" / split / cls / f"{i}.png")
    torch.set_num_threads(1)
    spec = RunSpec(model="vit_tiny_patch16_224", pool="gem", data=str(tmp_path / "data"),
                   model_kwargs={"img_size": 8, "patch_size": 4, "embed_dim": 24, "depth": 1,
                                 "num_heads": 2}, epochs=1, batch_size=8, augment=False)
    result = run_retrieval(spec, tmp_path / "run", whitening=True)
    assert result["layout"] == expected and result["spec"]["classes"] is None
    queries = 2 * 4  # every query image of the unseen classes has a match
    assert result["unseen"]["queries"] == queries == result["unseen_whitened"]["queries"]
    assert result["unseen_classes"] == (["d", "e"] if expected == "disjoint-classes"
                                        else ["x", "y"])
    assert result["seen"]["queries"] == 2 * len(layout["train"])  # every 10th image held out
