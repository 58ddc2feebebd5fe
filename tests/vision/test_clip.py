"""CLIP-style learning: pools on open_clip towers, metrics on cases known by construction,
the multi-positive loss, the CSV reader, and a resumable tiny run."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("open_clip")
from poolwise.cli import main
from poolwise.vision.clip import create_clip, use_pool
from poolwise.vision.clip.data import fashion_mnist_pairs, read_pairs_csv
from poolwise.vision.clip.metrics import image_text_recall, zero_shot_accuracy
from poolwise.vision.clip.towers import pool_of
from poolwise.vision.clip.train import (
    MAX_LOGIT_SCALE,
    ClipSpec,
    clamp_logit_scale,
    contrastive_loss,
    run_clip,
)

SMALL = {"embed_dim": 16, "vision_cfg": {"image_size": 28, "patch_size": 7, "width": 32,
                                         "layers": 1, "head_width": 8, "mlp_ratio": 2.0},
         "text_cfg": {"context_length": 12, "width": 32, "heads": 4, "layers": 1}}


def test_recall_with_multi_positive_map_by_hand():
    # 3 images, 4 captions; image 0 is described by captions 0 and 1
    images = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    texts = torch.tensor([[0.2, 1.0, 0], [1.0, 0, 0], [0, 1.0, 0.5], [0, 0.1, 1.0]])
    mapping = [[0, 1], [2], [3]]
    m = image_text_recall(images, texts, mapping, ks=(1, 2))
    # image 0: nearest caption 1 (hit). image 1: caption 0 (cos .98) before 2 (.89): R@1 miss
    # image 2: caption 3 (hit)
    assert m["image->text R@1"] == pytest.approx(2 / 3)
    assert m["image->text R@2"] == pytest.approx(1.0)
    # caption 0 -> image 1 (miss; it describes image 0); caption 1 -> image 0; 2 -> 1; 3 -> 2
    assert m["text->image R@1"] == pytest.approx(3 / 4)
    assert m["text->image R@2"] == pytest.approx(1.0)


def test_zero_shot_by_construction():
    class_text = torch.eye(3)[:, None, :].repeat(1, 2, 1)  # 3 classes x 2 templates
    images = torch.eye(3)[[0, 1, 2, 2]] + 0.1
    assert zero_shot_accuracy(images, torch.tensor([0, 1, 2, 2]), class_text) == 1.0
    assert zero_shot_accuracy(images, torch.tensor([1, 1, 2, 0]), class_text) == 0.5


def test_loss_is_clips_with_unique_captions_and_multi_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    scale = torch.tensor(10.0)
    logits = scale * torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(
        b, dim=1).T
    target = torch.arange(5)
    clip = (torch.nn.functional.cross_entropy(logits, target)
            + torch.nn.functional.cross_entropy(logits.T, target)) / 2
    torch.testing.assert_close(contrastive_loss(a, b, scale, torch.eye(5, dtype=bool)), clip)
    positive = torch.eye(5, dtype=bool)
    positive[0, 1] = positive[1, 0] = True  # captions 0 and 1 describe images 0 and 1
    rows_i2t = torch.stack([-logits.log_softmax(1)[0, :2].mean(),
                            -logits.log_softmax(1)[1, :2].mean(),
                            *(-logits.log_softmax(1)[i, i] for i in range(2, 5))]).mean()
    rows_t2i = torch.stack([-logits.T.log_softmax(1)[0, :2].mean(),
                            -logits.T.log_softmax(1)[1, :2].mean(),
                            *(-logits.T.log_softmax(1)[i, i] for i in range(2, 5))]).mean()
    torch.testing.assert_close(contrastive_loss(a, b, scale, positive), (rows_i2t + rows_t2i) / 2)


def test_pool_on_open_clip_vit_pools_patch_tokens_after_ln_post():
    model, tokenizer = create_clip(config=SMALL, pool="avg")
    visual = model.visual.eval()
    seen = {}
    visual.ln_post.register_forward_hook(lambda m, i, o: seen.setdefault("tokens", o))
    images = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        out = visual(images)
    expected = seen["tokens"][:, 1:].mean(dim=1) @ visual.proj
    torch.testing.assert_close(out, expected)
    ggem, _ = create_clip(config=SMALL, pool="ggem")
    assert pool_of(ggem).p.shape == (4,)  # width 32 / head width 8 = 4 heads
    assert "visual.poolwise_pool.p" in dict(ggem.named_parameters())
    loss = ggem.encode_image(images).sum()
    loss.backward()
    assert torch.isfinite(pool_of(ggem).p.grad).all() and pool_of(ggem).p.grad.abs().sum() > 0
    text = tokenizer(["a photo of a bag."])
    assert text.shape == (1, 12)


def test_pool_on_a_timm_tower():
    import open_clip

    model = open_clip.CLIP(embed_dim=16, vision_cfg={"timm_model_name": "vit_tiny_patch16_224",
                                                     "timm_model_pretrained": False,
                                                     "image_size": 224},
                           text_cfg={"context_length": 8, "width": 32, "heads": 4, "layers": 1})
    use_pool(model, "ggem")
    assert pool_of(model).p.shape == (3,)  # vit_tiny has 3 heads
    assert model.encode_image(torch.randn(1, 3, 224, 224)).shape == (1, 16)
    with pytest.raises(ValueError, match="unsupported image tower"):
        model.visual = torch.nn.Identity()
        use_pool(model, "gem")


def test_logit_scale_clamp():
    model, _ = create_clip(config=SMALL, pool="avg")
    with torch.no_grad():
        model.logit_scale.fill_(9.0)
    clamp_logit_scale(model)
    assert float(model.logit_scale.detach().exp()) == pytest.approx(100.0)
    assert MAX_LOGIT_SCALE == pytest.approx(np.log(100))


def test_built_in_pairs_and_csv_reader(tmp_path):
    pairs = fashion_mnist_pairs("embedded")
    test = pairs["test"]
    assert len(test.captions) == 10 * 5 * 3 and len(test.image_to_captions) == 1000
    label = int(test.images.labels[0])
    assert test.image_to_captions[0] == test.class_captions[label]

    from PIL import Image

    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((5, 5, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "pairs.tsv").write_text("filepath\ttitle\na.png\ta cat\nb.png\ta dog\n"
                                        "a.png\ta small cat\n")
    split = read_pairs_csv(tmp_path / "pairs.tsv", image_size=8)
    assert split.image_to_captions == [[0, 2], [1]] and len(split.images) == 2
    (tmp_path / "bad.tsv").write_text("path\ttitle\na.png\tx\n")
    with pytest.raises(ValueError, match="no column 'filepath'"):
        read_pairs_csv(tmp_path / "bad.tsv")
    (tmp_path / "gone.tsv").write_text("filepath\ttitle\nc.png\tx\n")
    with pytest.raises(ValueError, match=r"row 2: image .*c\.png does not exist"):
        read_pairs_csv(tmp_path / "gone.tsv")


class Stop(Exception):
    pass


def test_run_resumes_to_the_same_weights(tmp_path):
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    spec = ClipSpec(config=SMALL, epochs=2, batch_size=256)
    done = run_clip(spec, tmp_path / "a")
    assert 0 <= done["zero-shot accuracy"] <= 1 and len(done["p"]) == 4
    assert done["history"][-1]["logit_scale"] <= 100
    info = json.loads((tmp_path / "a" / "model.json").read_text())  # the resolved model
    assert info["pool"] == "ggem" and info["groups"] == 4 and info["parameters"] > 0

    def stop(record):
        raise Stop

    with pytest.raises(Stop):
        run_clip(spec, tmp_path / "b", on_epoch=stop)
    again = run_clip(spec, tmp_path / "b")
    a, b = (load_file(str(tmp_path / x / "model.safetensors")) for x in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert again["image->text R@1"] == done["image->text R@1"]


@pytest.mark.slow
def test_clip_compare_cli(tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(["vision", "clip-compare", "--pools", "avg,ggem", "--seeds", "2", "--epochs", "1",
                 "--batch-size", "256", "--threads", "1", "--out", str(out)]) == 0
    text = (out / "clip_compare.md").read_text()
    assert "| ggem | 2 |" in text and "## Verdict" in text
    assert (out / "clip_compare.png").stat().st_size > 0
    rows = json.loads((out / "clip_compare.json").read_text())["rows"]
    assert [r["pool"] for r in rows] == ["avg", "ggem"]


def _write_pairs(folder, count=32):
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = ["filepath\ttitle"]
    for i in range(count):
        pixels = (rng.random((28, 28)) * 255 * (1 + i % 2) / 2).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        rows.append(f"{folder / f'{i}.png'}\ta {'bright' if i % 2 else 'dark'} picture")
    (folder / "train.csv").write_text("\n".join(rows) + "\n")


def test_open_clip_recipe_trains_and_resumes_with_ggem_by_a_flag(tmp_path):
    pytest.importorskip("open_clip_train.main")
    _write_pairs(tmp_path)
    config = tmp_path / "model"
    config.mkdir()
    (config / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": SMALL, "preprocess_cfg": {"size": 28}}))
    recipe = ["--model", f"local-dir:{config}", "--train-data", str(tmp_path / "train.csv"),
              "--dataset-type", "csv", "--batch-size", "8", "--workers", "0", "--lr", "1e-2",
              "--warmup", "1", "--logs", str(tmp_path / "logs"), "--seed", "0", "--device", "cpu"]
    assert main(["vision", "open-clip-train", "--pool", "ggem", "--", *recipe,
                 "--epochs", "2", "--name", "first"]) == 0
    ckpt = tmp_path / "logs" / "first" / "checkpoints" / "epoch_2.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    p = state["visual.poolwise_pool.p"]
    assert p.shape == (4,)  # one exponent per head: width 32 / head_width 8
    assert not torch.allclose(p, torch.full_like(p, 3.0))  # trained by the recipe
    # resuming loads the recipe's checkpoint strictly: it only works if p is in the model
    assert main(["vision", "open-clip-train", "--pool", "ggem", "--", *recipe,
                 "--epochs", "3", "--name", "resumed", "--resume", str(ckpt)]) == 0
    resumed = torch.load(tmp_path / "logs" / "resumed" / "checkpoints" / "epoch_3.pt",
                         map_location="cpu", weights_only=True)
    assert resumed["epoch"] == 3 and resumed["state_dict"].keys() == state.keys()
    assert main(["vision", "open-clip-train", "--pool", "ggem"]) == 2  # no recipe arguments


def _clip_batch(count=7):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(count, 3, 28, 28, generator=g)
    text = torch.randint(1, 400, (count, 12), generator=g)
    positive = torch.eye(count, dtype=torch.bool)
    positive[0, 1] = positive[1, 0] = True  # a repeated caption
    return images, text, positive


def _clip_grads(model, images, text, positive, *, gather=None):
    from poolwise.vision.clip.train import _gather_batch

    if gather is None:
        loss = contrastive_loss(*model(images, text)[:3], positive)
    else:
        sizes, mine = gather
        image_emb, text_emb, scale = model(images[mine], text[mine])[:3]
        loss = contrastive_loss(_gather_batch(image_emb, sizes), _gather_batch(text_emb, sizes),
                                scale, positive)
    loss.backward()
    module = getattr(model, "module", model)
    return {name: p.grad.clone() for name, p in module.named_parameters()}


def _ddp_worker(rank, world, init_file, out_file):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    torch.manual_seed(0)
    model, _ = create_clip(config=SMALL, pool="ggem")
    net = torch.nn.parallel.DistributedDataParallel(model)
    images, text, positive = _clip_batch()
    shares = torch.arange(len(images)).tensor_split(world)  # 4 + 3 rows: padding is exercised
    grads = _clip_grads(net, images, text, positive,
                        gather=([len(s) for s in shares], shares[rank]))
    if rank == 0:
        torch.save(grads, out_file)
    dist.destroy_process_group()


def test_data_parallel_clip_step_has_the_single_process_gradient(tmp_path):
    """Two gloo processes, each encoding its share of a 7-pair batch and computing the loss over
    the gathered batch, end with (DDP-averaged) gradients equal to one process's gradients on
    the whole batch: the engine's DDP step is the single-process step."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "grads.pt")),
             nprocs=2, join=True)
    torch.manual_seed(0)
    model, _ = create_clip(config=SMALL, pool="ggem")
    expected = _clip_grads(model, *_clip_batch())
    got = torch.load(tmp_path / "grads.pt", weights_only=True)
    assert got.keys() == expected.keys() and "visual.poolwise_pool.p" in got
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)
