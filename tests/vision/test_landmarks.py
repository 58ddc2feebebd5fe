"""`vision revisited`: a finished run scored on revisited-Oxford-style images, end to end."""

import json

import numpy as np
import pytest
import torch

from poolwise.cli import main


@pytest.fixture(scope="module")
def landmark_run(tmp_path_factory):
    """A tiny ViT trained one epoch on RGB ImageFolder data, and a 6-image database with 2
    queries (a box each) and its ground truth in the documented JSON form."""
    from PIL import Image

    from poolwise.vision.train.classification import run_classification
    from poolwise.vision.train.spec import RunSpec

    root = tmp_path_factory.mktemp("landmarks")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls, level in (("dark", 40), ("light", 210)):
            (root / "data" / split / cls).mkdir(parents=True)
            for i in range(4):
                pixels = np.clip(rng.normal(level, 20, (40, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / "data" / split / cls / f"{i}.png")
    spec = RunSpec(model="vit_tiny_patch16_224", data=str(root / "data"),
                   model_kwargs={"img_size": 32, "patch_size": 8, "embed_dim": 24, "depth": 1,
                                 "num_heads": 2}, epochs=1, batch_size=4)
    torch.set_num_threads(1)
    run_classification(spec, root / "run")
    (root / "images").mkdir()
    for i in range(6):
        level = 40 if i < 3 else 210
        pixels = np.clip(rng.normal(level, 30, (50, 60, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"db{i}.jpg")
    for i, level in enumerate((40, 210)):
        pixels = np.clip(rng.normal(level, 30, (50, 60, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"q{i}.jpg")
    gnd = {"imlist": [f"db{i}" for i in range(6)], "qimlist": ["q0", "q1"],
           "gnd": [{"easy": [0], "hard": [1], "junk": [2], "bbx": [5, 5, 40, 30]},
                   {"easy": [3, 4], "hard": [], "junk": [5], "bbx": [0, 0, 60, 50]}]}
    (root / "gnd.json").write_text(json.dumps(gnd))
    return root


def test_revisited_command_scores_the_run_as_the_protocol_says(landmark_run, tmp_path,
                                                               capsys):
    from PIL import Image

    from poolwise.vision.retrieval.revisited import load_ground_truth, revisited_metrics
    from poolwise.vision.train.classification import load_trained
    from poolwise.vision.train.inputs import timm_transform

    root = landmark_run
    assert main(["vision", "revisited", str(root / "run"), "--images", str(root / "images"),
                 "--gnd", str(root / "gnd.json"), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| medium |" in printed and "| hard |" in printed
    result = json.loads((tmp_path / "revisited.json").read_text())
    assert (result["queries"], result["database"]) == (2, 6)
    assert result["metrics"]["hard"]["queries_without_positive"] == 1  # q1 has no hard image
    assert "Made with: `poolwise" in (tmp_path / "revisited.md").read_text()
    # the same numbers by hand: crop, eval transform, pre-logits, L2, cosine, the protocol
    model, spec = load_trained(root / "run")
    transform = timm_transform(spec, model, training=False)

    def embedding(name, box=None):
        image = Image.open(root / "images" / f"{name}.jpg").convert("RGB")
        if box is not None:
            image = image.crop(tuple(box))
        with torch.inference_mode():
            features = model.forward_features(transform(image)[None])
            e = model.head_from_pooled(model.pool(features), pre_logits=True)
        return torch.nn.functional.normalize(e, dim=1)[0]

    table = load_ground_truth(root / "gnd.json")
    q = torch.stack([embedding(n, g["bbx"]) for n, g in zip(table["qimlist"], table["gnd"],
                                                            strict=True)])
    db = torch.stack([embedding(n) for n in table["imlist"]])
    expected = revisited_metrics((q @ db.T).numpy(), table)
    for setting in ("easy", "medium", "hard"):
        assert result["metrics"][setting]["map"] == pytest.approx(expected[setting]["map"],
                                                                  abs=1e-6)


def test_missing_images_and_bad_ground_truth_are_named(landmark_run, tmp_path, capsys):
    root = landmark_run
    gnd = json.loads((root / "gnd.json").read_text())
    gnd["imlist"][2] = "nowhere"
    (tmp_path / "gnd.json").write_text(json.dumps(gnd))
    args = ["vision", "revisited", str(root / "run"), "--images", str(root / "images"),
            "--out", str(tmp_path / "out")]
    assert main([*args, "--gnd", str(tmp_path / "gnd.json")]) == 2
    err = capsys.readouterr().err
    assert "gnd.json (images read from" in err and "names 1 image(s) that do not exist" in err
    assert "nowhere.jpg" in err
    (tmp_path / "bad.json").write_text(json.dumps({"imlist": [], "gnd": []}))
    assert main([*args, "--gnd", str(tmp_path / "bad.json")]) == 2
    assert "bad.json: expected an object with imlist, qimlist and gnd" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_retrieval_run_folder_is_read_through_its_train_folder(landmark_run, tmp_path):
    import shutil

    from poolwise.vision.retrieval.landmarks import evaluate_revisited

    root = landmark_run
    shutil.copytree(root / "run", tmp_path / "retrieval" / "train")
    direct = evaluate_revisited(root / "run", root / "images", root / "gnd.json")
    via = evaluate_revisited(tmp_path / "retrieval", root / "images", root / "gnd.json")
    assert via["metrics"] == direct["metrics"]
    assert via["run"] == str(tmp_path / "retrieval" / "train")
