"""The pools x seeds grid (:mod:`poolwise.vision.compare`): tables, paired verdicts, both
tasks."""

import json

import pytest
import torch
from _tiny_vit import tiny_spec

from poolwise.vision.compare import run_compare, summarise_pools, verdicts, write_compare_report


def test_compare_grid_table_and_verdict(tmp_path):
    torch.set_num_threads(1)
    base = tiny_spec(epochs=1)
    results = run_compare(tmp_path, base, ["avg", "ggem"], [0, 1])
    assert [(r["spec"]["pool"], r["spec"]["seed"]) for r in results] == [
        ("avg", 0), ("avg", 1), ("ggem", 0), ("ggem", 1)]
    rows = summarise_pools(results)
    avg = rows[0]
    values = [100 * r["accuracy"] for r in results[:2]]
    assert avg["accuracy"]["mean"] == pytest.approx(sum(values) / 2)
    assert avg["accuracy"]["std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    report = write_compare_report(tmp_path, results, "poolwise vision compare ...")
    text = report.read_text()
    assert "| avg | 2 |" in text and "| ggem | 2 |" in text
    (found,) = verdicts(results)
    assert found["names"] == ["ggem", "avg"] and found["n"] == 2 and found["text"] in text
    for name in ("compare.json", "compare.csv", "compare.png", "p.png", "curves.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_retrieval_grid_reports_unseen_classes_with_paired_verdicts(tmp_path, capsys):
    torch.set_num_threads(1)
    base = tiny_spec(classes=None, epochs=1)
    with pytest.raises(ValueError, match="task 'detection' is not one of"):
        run_compare(tmp_path, base, ["avg"], [0], task="detection")
    results = run_compare(tmp_path, base, ["avg", "ggem"], [0, 1], task="retrieval")
    for r in results:  # each cell is a `vision retrieval` run folder, flattened
        saved = json.loads((tmp_path / f"{r['spec']['pool']}-seed{r['spec']['seed']}"
                            / "retrieval.json").read_text())
        assert r["retrieval"] == saved["unseen"] and r["seen_map@r"] == saved["seen"]["map@r"]
        assert r["parameters"] == saved["training"]["parameters"] > 0
        assert r["spec"]["classes"] == [0, 1, 2, 3, 4]
    assert len(results[2]["p"]) == 2 and results[0]["p"] is None
    report = write_compare_report(tmp_path, results, "poolwise vision compare ...",
                                  task="retrieval")
    text = report.read_text()
    assert text.startswith("# Pooling comparison (retrieval)")
    assert "trained on T-shirt/top, Trouser, Pullover, Dress, Coat" in text
    assert ("| pool | seeds | unseen Recall@1 (%) | unseen R-precision (%) | unseen mAP@R (%) |"
            in text)
    unseen = [100 * r["retrieval"]["recall@1"] for r in results]
    difference = (unseen[2] + unseen[3] - unseen[0] - unseen[1]) / 2
    (recall,) = json.loads((tmp_path / "compare.json").read_text())["verdict"]["recall@1"]
    assert recall["names"] == ["ggem", "avg"]
    assert recall["mean_difference"] == pytest.approx(difference)
    assert f"- unseen Recall@1 (%): {recall['text'].split(': ', 1)[1]}" in text
    header = (tmp_path / "compare.csv").read_text().splitlines()[0]
    assert header == "pool,seed,recall@1,r_precision,map@r,seen_map@r,dependence,p"
    assert (tmp_path / "p.png").stat().st_size > 0
    assert json.loads((tmp_path / "compare.json").read_text())["protocol"] == "retrieval"
    with pytest.warns(DeprecationWarning, match="protocol= is renamed task="):
        alone = write_compare_report(tmp_path / "avg", results[:2], "...", protocol="retrieval")
    assert alone.read_text().startswith("# Pooling comparison (retrieval)")
    assert "p.png" not in alone.read_text() and not (tmp_path / "avg" / "p.png").exists()
    from poolwise.cli import main

    with pytest.raises(SystemExit):
        main(["vision", "compare", "--task", "detection", "--out", str(tmp_path / "x")])
    assert "invalid choice: 'detection'" in capsys.readouterr().err
    # the former option name still runs the task (the finished cells above), with a note
    assert main(["vision", "compare", "--protocol", "retrieval", "--pools", "avg", "--seeds", "1",
                 "--epochs", "1", "--depth", "1", "--embed-dim", "24", "--num-heads", "2",
                 "--out", str(tmp_path / "again")]) == 0
    captured = capsys.readouterr()
    assert "--protocol is renamed --task" in captured.err and "unseen Recall@1" in captured.out


def test_verdicts_pair_pools_by_seed():
    def cell(pool, seed, accuracy):
        return {"spec": {"pool": pool, "seed": seed}, "accuracy": accuracy}

    close = [cell("ggem", 0, 0.901), cell("ggem", 1, 0.905), cell("ggem", 2, 0.899),
             cell("avg", 0, 0.900), cell("avg", 1, 0.906), cell("avg", 2, 0.897)]
    (v,) = verdicts(close)
    # differences in points: +0.1, -0.1, +0.2 -> mean 0.0667, sd 0.1528, t = 0.756 (df 2),
    # two-sided p = 1 - t / sqrt(t**2 + 2) = 0.529
    assert v["mean_difference"] == pytest.approx(0.0667, abs=1e-4)
    assert v["p_value"] == pytest.approx(0.529, abs=1e-3)
    assert v["text"].startswith("top-1 accuracy (%): ggem − avg = +0.0667")
    assert v["text"].endswith("no evidence of a difference")
    ahead = [cell("ggem", s, 0.91 + 0.001 * s) for s in range(3)] + [
        cell("gem", s, 0.90 + 0.0012 * s) for s in range(3)] + [
        cell("max", s, 0.95 - 0.001 * s) for s in range(3)]
    gem, mx = verdicts(ahead)
    assert gem["text"].endswith("ggem is higher") and mx["text"].endswith("ggem is lower")
    assert verdicts([cell("avg", 0, 0.9)]) == []


def test_the_training_curves_are_the_mean_over_seeds_and_their_last_fall_is_reported(tmp_path):
    from poolwise.vision.compare_plots import curve_lines, plot_curves

    def cell(pool, seed, losses, accuracies):
        return {"spec": {"pool": pool, "seed": seed},
                "history": [{"epoch": i + 1, "train_loss": loss, "test_loss": loss + 0.1,
                             "test_accuracy": acc}
                            for i, (loss, acc) in enumerate(zip(losses, accuracies, strict=True))]}

    results = [cell("avg", 0, [3.0, 2.0, 1.0], [0.5, 0.6, 0.7]),
               cell("avg", 1, [3.0, 2.0, 1.5], [0.5, 0.6, 0.6]),
               cell("ggem", 0, [3.0, 1.0, 0.9], [0.5, 0.7, 0.8])]
    lines = curve_lines(results)
    # avg: mean 2.0 -> 1.25 (37.5 %); ggem: 1.0 -> 0.9 (10.0 %)
    assert "its fall over the last epoch (2 to 3), per pool: avg 37.5 %, ggem 10.0 %." in lines[4]
    assert plot_curves(tmp_path / "curves.png", results)
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert (tmp_path / "curves.svg").stat().st_size > 0
    # runs without a per-epoch history draw nothing and say nothing
    bare = [{"spec": {"pool": "avg", "seed": 0}}]
    assert not plot_curves(tmp_path / "none.png", bare) and curve_lines(bare) == []
