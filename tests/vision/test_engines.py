import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from poolwise.vision.compare import run_compare, summarise_pools, verdicts, write_compare_report
from poolwise.vision.retrieval.run import run_retrieval, split_classes
from poolwise.vision.train.classification import load_trained, run_classification
from poolwise.vision.train.spec import RunSpec

TINY = {"img_size": 28, "patch_size": 7, "embed_dim": 24, "depth": 1, "num_heads": 2,
        "mlp_ratio": 2.0}


def tiny_spec(**changes) -> RunSpec:
    spec = RunSpec(model="vit_tiny_patch16_224", pool="ggem", model_kwargs=TINY,
                   data="embedded", classes=[0, 1, 7], epochs=2, batch_size=64, lr=3e-3,
                   p_lr_mult=10.0)
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec


class Interrupt(Exception):
    pass


def test_run_writes_results_and_resumes_to_the_same_weights(tmp_path):
    torch.set_num_threads(1)
    straight = run_classification(tiny_spec(), tmp_path / "straight")
    assert straight["accuracy"] > 0.6  # 3 easy classes: T-shirt, trouser, sneaker
    assert set(straight["retrieval"]) >= {"recall@1", "map@r", "r_precision"}
    assert 0 <= straight["dependence"] <= 1 and len(straight["p"]) == 2
    assert straight["p"] != [3.0, 3.0]  # p was trained
    log = (tmp_path / "straight" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2]

    def stop_after_first(record):
        raise Interrupt

    with pytest.raises(Interrupt):
        run_classification(tiny_spec(), tmp_path / "resumed", on_epoch=stop_after_first)
    assert not (tmp_path / "resumed" / "result.json").exists()
    assert len((tmp_path / "resumed" / "log.jsonl").read_text().splitlines()) == 1
    # a kill between the checkpoint's write and the log's leaves the log an epoch behind;
    # resuming rewrites it from the checkpoint's history
    (tmp_path / "resumed" / "log.jsonl").write_text("")
    resumed = run_classification(tiny_spec(), tmp_path / "resumed")
    log = (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2]
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["accuracy"] == straight["accuracy"]

    again = run_classification(tiny_spec(), tmp_path / "straight")  # finished: read back
    assert again == json.loads((tmp_path / "straight" / "result.json").read_text())
    with pytest.raises(ValueError, match="other settings \\(lr\\)"):
        run_classification(tiny_spec(lr=1e-2), tmp_path / "straight")
    model, spec = load_trained(tmp_path / "straight")
    assert spec.pool == "ggem" and model.p_values() == pytest.approx(straight["p"])


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
    for name in ("compare.json", "compare.csv", "compare.png", "p.png"):
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


DDP_ARGS = ["vision", "train", "--epochs", "1", "--embed-dim", "24", "--depth", "1",
            "--num-heads", "2", "--batch-size", "128"]


@pytest.fixture(scope="module")
def torchrun_run(tmp_path_factory):
    """DDP on CPU (gloo): the same CLI command, two processes under torchrun, one run folder."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path_factory.mktemp("torchrun") / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29533", "-m", "poolwise", *DDP_ARGS, "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


@pytest.mark.slow
def test_cli_train_under_torchrun_two_processes(torchrun_run):
    out, done = torchrun_run
    result = json.loads((out / "result.json").read_text())
    assert result["n"] == 1000 and len(result["history"]) == 1
    assert "test accuracy" in done.stdout


@pytest.mark.slow
def test_cli_train_on_slurm_two_tasks_gives_the_torchrun_weights(cluster, torchrun_run,
                                                                 tmp_path, capsys):
    """``--launcher slurm`` with two CPU tasks on one node: rank, world size and rendezvous
    from SLURM's environment, DDP over gloo, the same weights as under torchrun."""
    from poolwise.cli import main

    out = tmp_path / "ddp"
    assert main([*DDP_ARGS, "--out", str(out), "--launcher", "slurm", "--gpus-per-node", "0",
                 "--tasks-per-node", "2", "--slurm-cpus", "1", "--slurm-time", "10"]) == 0
    printed = capsys.readouterr().out
    assert "SLURM: one job (partition (default), 10 min, 1 node(s) x 2 task(s) of 1 CPU and " \
           "0 GPU" in printed and "test accuracy" in printed
    reference = torchrun_run[0]
    assert (out / "model.safetensors").read_bytes() == \
        (reference / "model.safetensors").read_bytes()
    a, b = (json.loads((d / "result.json").read_text()) for d in (out, reference))
    assert a["accuracy"] == b["accuracy"] and a["p"] == b["p"]


@pytest.mark.slow
def test_a_training_job_warned_by_slurm_requeues_and_ends_with_the_uninterrupted_weights(
        cluster, tmp_path, capsys):
    """SLURM's warning signal mid-run: the job requeues itself (submitit's checkpoint protocol)
    and resumes from its run folder's last epoch to the weights of a run never interrupted."""
    from poolwise.cli import main

    args = [*DDP_ARGS[:3], "4", *DDP_ARGS[4:]]  # 4 epochs
    assert main([*args, "--threads", "1", "--out", str(tmp_path / "local")]) == 0
    slurm = [*args, "--out", str(tmp_path / "slurm"), "--launcher", "slurm", "--gpus-per-node",
             "0", "--slurm-cpus", "1", "--slurm-time", "10"]
    assert main([*slurm, "--no-wait"]) == 0
    job = json.loads((tmp_path / "slurm" / "slurm" / "cells.json").read_text())["train"]
    history = tmp_path / "slurm" / "log.jsonl"
    while not (history.is_file() and history.read_text().count("\n") >= 1):
        time.sleep(0.1)  # the first epoch is checkpointed
    cluster.warn(job)
    capsys.readouterr()
    assert main(slurm) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert (tmp_path / "slurm" / "model.safetensors").read_bytes() == \
        (tmp_path / "local" / "model.safetensors").read_bytes()
    log = [json.loads(line) for line in history.read_text().splitlines()]
    assert [r["epoch"] for r in log if "epoch" in r] == [1, 2, 3, 4]


def test_a_locked_run_folder_refuses_and_stale_temporaries_go(tmp_path):
    from poolwise._io import FolderBusyError, lock_folder

    stale = tmp_path / ".checkpoint.pt.0123456789abcdef.tmp"  # left by a killed run
    stale.write_bytes(b"half a checkpoint")
    with lock_folder(tmp_path), pytest.raises(FolderBusyError, match="in use by another"):
        run_classification(tiny_spec(epochs=1), tmp_path)
    assert stale.exists() and not (tmp_path / "run.json").exists()
    run_classification(tiny_spec(epochs=1), tmp_path)
    assert not stale.exists() and (tmp_path / "result.json").is_file()


def test_a_finished_run_whose_weights_changed_finishes_again_from_its_checkpoint(tmp_path):
    first = run_classification(tiny_spec(epochs=1), tmp_path)
    weights = tmp_path / "model.safetensors"
    original = weights.read_bytes()
    assert first["weights"] == {"file": "model.safetensors",
                                "sha256": hashlib.sha256(original).hexdigest()}
    assert run_classification(tiny_spec(epochs=1), tmp_path) == first  # finished: read back
    weights.write_bytes(original[:-100])  # truncated after the run
    again = run_classification(tiny_spec(epochs=1), tmp_path)
    assert weights.read_bytes() == original and again["weights"] == first["weights"]


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_the_full_recipe_resumes_bit_identically(tmp_path, amp):
    """Mixup/CutMix, label smoothing, drop path, layer decay, accumulation, clipping, EMA and
    AMP (fp16: with the gradient scaler checkpointed): an interrupted run ends with the same
    weights, EMA weights and scaler as an uninterrupted one."""
    torch.set_num_threads(1)
    spec = tiny_spec(epochs=3, batch_size=32, accum_steps=2, mixup=0.8, cutmix=1.0,
                     label_smoothing=0.1, drop_path=0.1, layer_decay=0.75, clip_grad=1.0,
                     ema_decay=0.9, amp=amp, warmup_epochs=0.5, min_lr=1e-5)
    straight = run_classification(spec, tmp_path / "straight")
    assert "ema" in straight and 0 <= straight["ema"]["accuracy"] <= 1
    history = straight["history"]
    assert all("ema_test_accuracy" in h for h in history)
    assert history[0]["lr"] > history[-1]["lr"]  # the scheduler ran per step

    def stop(record):
        if record["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_classification(spec, tmp_path / "resumed", on_epoch=stop)
    state = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["trainer"]
    assert state["updates"] > 0 and state["ema"] is not None and "scheduler" in state
    if amp == "fp16":
        assert state["scaler"]["scale"] > 0  # the scaler's state travels with the run
    run_classification(spec, tmp_path / "resumed")
    for name in ("model.safetensors", "model_ema.safetensors"):
        a = load_file(str(tmp_path / "straight" / name))
        b = load_file(str(tmp_path / "resumed" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_bad_recipes_fail_before_the_run_folder_is_written(tmp_path, capsys):
    from poolwise.cli import main

    recipe = tmp_path / "r.toml"
    for text, message in [
        ('epochs = 1\nmixxup = 0.8\n', "unknown recipe key(s) mixxup"),
        ('epochs = "ten"\n', "epochs = 'ten' is not a valid value for epochs"),
        ('lr = true\n', "lr = True is not a valid value for lr"),
        ('epochs = [1\n', "not a valid TOML recipe"),
    ]:
        recipe.write_text(text)
        assert main(["vision", "train", "--recipe", str(recipe), "--out",
                     str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and str(recipe) in err
    recipe.write_text('classes = [3]\nmixup = 0.8\nepochs = 1\n')  # one class: nothing to learn
    assert main(["vision", "train", "--recipe", str(recipe), "--out",
                 str(tmp_path / "run")]) == 2
    assert "classes = [3]: must be two or more distinct class indices" in \
        capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main(["vision", "train", "--recipe", "no_such_recipe", "--out",
                 str(tmp_path / "run")]) == 2
    assert "shipped: tiny28_cpu" in capsys.readouterr().err


def test_shipped_recipes_parse_and_the_cpu_one_runs(tmp_path, capsys):
    from poolwise.cli import main
    from poolwise.vision.train.recipe import check_recipe, read_recipe, shipped_recipes

    names = shipped_recipes()
    assert {"tiny28_cpu", "vit_base_ggem_in1k", "vit_large_ggem_in1k"} <= set(names)
    for name in names:
        path, table = read_recipe(name)
        check_recipe(table, RunSpec, str(path))
    out = tmp_path / "run"
    assert main(["vision", "train", "--recipe", "tiny28_cpu", "--epochs", "2", "--out",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pool ggem (6 groups)" in printed and "ema" in printed
    spec = json.loads((out / "run.json").read_text())
    assert spec["epochs"] == 2 and spec["mixup"] == 0.8 and spec["layer_decay"] == 0.75
    assert spec["model_kwargs"]["num_heads"] == 6  # the recipe's table, then the option
    result = json.loads((out / "result.json").read_text())
    assert result["accuracy"] > 0.3 and result["ema"]["accuracy"] > 0.3  # 10 classes


@pytest.mark.slow
def test_compiled_channels_last_training_matches_the_recipe_contract(tmp_path):
    """--compile and --channels-last train through torch.compile (the GGeM kernel runs as
    itself inside the compiled model) and give a run like any other."""
    result = run_classification(tiny_spec(epochs=1, compile=True, channels_last=True),
                                tmp_path / "run")
    assert result["accuracy"] > 0.5 and len(result["p"]) == 2


def test_the_imagenet_recipe_runs_end_to_end_on_a_tiny_image_folder(tmp_path):
    """The shipped ViT-B/16 ImageNet-1k recipe (LAMB, layer decay, RandAugment, Mixup/CutMix,
    drop path, clipping, EMA, bf16), shrunk only in size: one block, 32x32 images, no hub."""
    from PIL import Image

    from poolwise.vision.train.recipe import check_recipe, read_recipe

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(
                    tmp_path / "data" / split / cls / f"{i}.png")
    path, table = read_recipe("vit_base_ggem_in1k")
    values = check_recipe(table, RunSpec, str(path))
    values.update(pretrained=False, data=str(tmp_path / "data"), epochs=1, batch_size=4,
                  model_kwargs={"img_size": 32, "depth": 1})
    result = run_classification(RunSpec(**values), tmp_path / "run")
    assert result["spec"]["opt"] == "lamb" and result["groups"] == 12
    assert "ema" in result and len(result["p"]) == 12


def test_the_trainer_scales_each_group_once():
    from poolwise.vision.models import create_model
    from poolwise.vision.train.engine import StepConfig, Trainer

    model = create_model("vit_tiny_patch16_224", pool="ggem", num_classes=3, **TINY)
    trainer = Trainer(model, StepConfig(epochs=2, steps_per_epoch=5, lr=1e-3, p_lr_mult=10.0,
                                        layer_decay=0.5, warmup_epochs=0.0),
                      torch.device("cpu"))
    trainer.scheduler.step_update(num_updates=0)
    lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    head = max(v for k, v in lrs.items() if k != "pool_p")
    assert head == pytest.approx(1e-3) and lrs["pool_p"] == pytest.approx(1e-2)
    assert min(lrs.values()) == pytest.approx(1e-3 * 0.5 ** 2)  # depth 1: stem, block, head


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


@pytest.mark.parametrize("loss", ["multi_similarity", "proxy_anchor"])
def test_metric_learning_losses_train_an_embedding_and_resume(tmp_path, loss):
    pytest.importorskip("pytorch_metric_learning")
    torch.set_num_threads(1)
    spec = tiny_spec(classes=None, loss=loss, epochs=2, batch_size=40, m_per_class=4,
                     lr=2e-3)
    result = run_classification(spec, tmp_path / "run")
    # an untrained classifier says nothing: accuracy is not reported, retrieval is
    assert result["accuracy"] is None and result["loss"] is None
    assert result["retrieval"]["recall@1"] > 0.3  # 10 classes: chance 0.1
    assert "test_recall@1" in result["history"][0] and "test_accuracy" not in result["history"][0]
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    if loss == "proxy_anchor":  # the proxies train (own group, lr x100) and are checkpointed
        proxies = state["trainer"]["criterion"]["proxies"]
        assert proxies.shape == (10, 24)
        groups = state["trainer"]["optimizer"]["param_groups"]
        assert groups[-1]["lr_scale"] == 100.0 and groups[-1]["weight_decay"] == 0.0
    else:
        assert state["trainer"]["criterion"] == {}
    # a finished run returns its result; a spec with mixup is refused before training
    assert run_classification(spec, tmp_path / "run")["retrieval"] == result["retrieval"]
    with pytest.raises(ValueError, match="takes hard labels: drop --mixup"):
        run_classification(tiny_spec(loss=loss, mixup=0.8), tmp_path / "mix")
    with pytest.raises(ValueError, match="must be a multiple of --m-per-class 4"):
        run_classification(tiny_spec(classes=None, loss=loss, batch_size=42), tmp_path / "b")


@pytest.mark.parametrize("keep", [lambda n: 1000, lambda n: n // 3])  # the reader fails apart
def test_a_damaged_checkpoint_at_resume_is_named(tmp_path, keep):
    run_classification(tiny_spec(epochs=1), tmp_path)
    (tmp_path / "result.json").unlink()  # as if killed after the last checkpoint
    checkpoint = tmp_path / "checkpoint.pt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[:keep(len(data))])
    with pytest.raises(ValueError, match=f"{checkpoint}: a damaged or foreign checkpoint .*; "
                                         "delete it to train this run from its first epoch"):
        run_classification(tiny_spec(epochs=1), tmp_path)
