"""Frozen-backbone pool probe: which pool suits a (pretrained) ViT's final tokens?

The backbone runs once over the train and test images and its final tokens
(``forward_features``: prefix tokens included, after the final norm where the model normalises
tokens) are cached on disk in float16 or float32. Every pool then gets a head trained on the
cached tokens alone: the pool (prefix tokens excluded, GGeM with one group per head), the
backbone's post-pool norm where the model has one (BEiT-style ``fc_norm``, frozen) and a new
linear classifier. The pooled test features are also scored by k-NN retrieval. The backbone
never runs again, so one pool x seed costs seconds, not a backbone pass.

Layout of the output folder:

- ``tokens/``: ``{train,test}_tokens.npy`` (n, N, C) and ``{train,test}_labels.npy``, with
  ``meta.json`` naming what they were computed from (model, arguments, weights and their
  sha256, the data's content fingerprint (:mod:`poolwise.vision.data.fingerprint`), classes,
  dtype); another configuration is refused, so a cache is never reused for other tokens, and
  a cached file that is not the floats and labels it describes is named. The same data by
  another path reuses the cache.
- ``cells/<pool>-seed<k>.json``: one finished probe each, written atomically (resumable).
- ``probe.md``, ``probe.json``, ``probe.csv``, ``probe.png``: the table over pools and seeds.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from poolwise._io import atomic_path, read_json, sha256_file, write_json
from poolwise.pooling import create_pool, list_pools, pool_info
from poolwise.pooling.modules import learned_exponents
from poolwise.pooling.registry import COMPARED
from poolwise.runs import Cell, Grid, Launch, RunFolder
from poolwise.runs.loop import StepLoop
from poolwise.vision.models import P_LR_MULT
from poolwise.vision.retrieval.metrics import retrieval_metrics
from poolwise.vision.train.dependence import group_dependence

DTYPES = ("float16", "float32")


@dataclass
class ProbeSpec:
    """What a probe run is: the backbone and its weights, the data, the pools and the head's
    training (saved as ``probe_spec.json``)."""

    model: str
    pretrained: bool = False
    checkpoint: str | None = None
    model_kwargs: dict = field(default_factory=dict)
    data: str = "embedded"
    classes: list[int] | None = None
    dtype: str = "float16"
    pools: list[str] = field(default_factory=lambda: list(COMPARED))
    seeds: int = 3
    epochs: int = 30
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    p_lr_mult: float = P_LR_MULT

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {DTYPES}")
        unknown = [p for p in self.pools if p not in list_pools()]
        if unknown:
            raise ValueError(f"unknown pools {unknown}; known: {', '.join(list_pools())}")
        if not self.pools:
            raise ValueError("no pool to probe")
        if self.pretrained and self.checkpoint:
            raise ValueError("pass --pretrained or --checkpoint, not both")
        for name in ("seeds", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _backbone(spec: ProbeSpec, channels: int):
    """The frozen model whose ``forward_features`` gives the tokens, and its load report."""
    from poolwise.vision.models import create_model, load_checkpoint

    kwargs = {"in_chans": channels, **spec.model_kwargs}
    # the weights a checkpoint or timm does not give are drawn from seed 0, so that every run
    # (and every machine of a cluster) caches the same tokens for the same key
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model(spec.model, pool="avg", pretrained=spec.pretrained, **kwargs)
    if not model.is_vit:
        raise ValueError(f"{spec.model} gives feature maps, not tokens: the probe is for ViTs")
    report = None
    if spec.checkpoint is not None:
        report = load_checkpoint(model, spec.checkpoint, strict=False)
    return model.eval(), report


def _cache_key(spec: ProbeSpec) -> dict:
    weights = None
    if spec.checkpoint is not None:
        path = Path(spec.checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        weights = {"file": str(path.resolve()), "sha256": sha256_file(path)}
    from poolwise.vision.data.fingerprint import data_fingerprint

    # the data's content, not its path: the same images by another path reuse the cache
    return {"model": spec.model, "model_kwargs": spec.model_kwargs,
            "pretrained": spec.pretrained, "checkpoint": weights,
            "data": data_fingerprint(spec.data), "classes": spec.classes, "dtype": spec.dtype}


def _splits(spec: ProbeSpec):
    from poolwise.vision.data import load_images

    splits = load_images(spec.data, image_size=spec.model_kwargs.get("img_size"))
    train, test = splits["train"], splits["test"]
    if spec.classes is not None:
        train, test = train.subset_classes(spec.classes), test.subset_classes(spec.classes)
    return train, test


def token_batch(model: nn.Module, images: Tensor, device: torch.device) -> np.ndarray:
    """The backbone's final tokens of one batch, as the cache stores them (float32 on the
    host, before the cache's dtype); call under ``torch.inference_mode()``."""
    return model.forward_features(images.to(device)).float().cpu().numpy()


def cache_tokens(
    spec: ProbeSpec,
    out: Path,
    *,
    device: torch.device | None = None,
    batch_size: int = 128,
    on_batch: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Computes (or finds) the cached tokens; returns the cache's ``meta.json`` content."""
    from poolwise.vision.train.engine import default_device
    from poolwise.vision.train.inputs import make_loader

    folder = Path(out) / "tokens"
    key = _cache_key(spec)
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        meta = read_json(meta_path, "token cache description")
        if meta.get("key") != key:
            old = meta.get("key") if isinstance(meta.get("key"), dict) else {}
            differ = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
            raise ValueError(f"{folder} holds tokens of another configuration (differing: "
                             f"{', '.join(differ)}; 'data' is the images' content); use "
                             "another --out (or delete that folder)")
        if all((folder / f"{s}_{kind}.npy").is_file() for s in ("train", "test")
               for kind in ("tokens", "labels")):
            return meta
    device = device or default_device()
    train, test = _splits(spec)
    model, report = _backbone(spec, train.channels)
    model.to(device)
    start = time.perf_counter()
    shapes = {}
    for name, split in (("train", train), ("test", test)):
        loader = make_loader(split, batch_size, shuffle=False)
        n, done = len(split.labels), 0
        with atomic_path(folder / f"{name}_tokens.npy") as tmp:
            store = None
            with torch.inference_mode():
                for step, (images, _) in enumerate(loader):
                    tokens = token_batch(model, images, device)
                    if store is None:
                        store = np.lib.format.open_memmap(
                            tmp, mode="w+", dtype=spec.dtype, shape=(n, *tokens.shape[1:]))
                    store[done:done + len(tokens)] = tokens
                    done += len(tokens)
                    if on_batch is not None:
                        on_batch(name, step + 1, len(loader))
            store.flush()
            shapes[name] = list(store.shape)
            del store
        with atomic_path(folder / f"{name}_labels.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, np.asarray(split.labels, dtype=np.int64))  # a path would get ".npy"
    meta = {
        "key": key, "shapes": shapes, "seconds": time.perf_counter() - start,
        "num_features": model.num_features, "num_prefix_tokens": model.num_prefix_tokens,
        "num_heads": model.num_heads, "norm": model.norm, "classes": list(train.classes),
        "load_report": report.lines() if report is not None else None,
    }
    if model.norm == "pooled":  # the post-pool norm travels with the tokens (frozen)
        with atomic_path(folder / "fc_norm.pt") as tmp:
            torch.save(model.backbone.fc_norm.state_dict(), tmp)
    write_json(meta_path, meta)
    return meta


class ProbeHead(nn.Module):
    """pool -> frozen post-pool norm (or identity) -> linear, over cached tokens (B, N, C)."""

    def __init__(self, pool: str, meta: dict, norm: nn.Module | None = None) -> None:
        super().__init__()
        c = meta["num_features"]
        self.pool = create_pool(pool, num_channels=c, groups=meta["num_heads"], channel_dim=-1,
                                num_prefix_tokens=meta["num_prefix_tokens"])
        self.norm = norm if norm is not None else nn.Identity()
        for param in self.norm.parameters():
            param.requires_grad_(False)
        self.head = nn.Linear(c, len(meta["classes"]))

    def embed(self, tokens: Tensor) -> Tensor:
        return self.norm(self.pool(tokens))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.head(self.embed(tokens))


def _load_norm(folder: Path, meta: dict) -> nn.Module | None:
    if meta["norm"] != "pooled":
        return None
    state = torch.load(folder / "fc_norm.pt", map_location="cpu", weights_only=True)
    norm = nn.LayerNorm(meta["num_features"], eps=1e-6)
    norm.load_state_dict(state)
    return norm


def _batches(tokens: np.ndarray, index: np.ndarray, batch_size: int):
    for start in range(0, len(index), batch_size):
        rows = np.sort(index[start:start + batch_size])  # sorted: sequential memmap reads
        yield rows, torch.from_numpy(np.asarray(tokens[rows], dtype=np.float32))


def cached_split(folder: Path, name: str, meta: dict) -> tuple[np.ndarray, Tensor]:
    """The cached tokens (memory-mapped) and labels of split ``name``, checked against the
    cache's description: plain numbers (never pickled objects), the recorded shapes.

    Raises:
        ValueError: naming the file at fault, and how to recompute the cache.
    """
    tokens_path, labels_path = folder / f"{name}_tokens.npy", folder / f"{name}_labels.npy"
    fix = f"delete {folder} to compute the tokens again"
    try:
        tokens = np.load(tokens_path, mmap_mode="r", allow_pickle=False)
        labels = np.load(labels_path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{tokens_path.parent}: a cached {name} file cannot be read "
                         f"({type(error).__name__}: {str(error)[:200]}); {fix}") from None
    shape = meta.get("shapes", {}).get(name)
    if tokens.dtype.kind != "f" or list(tokens.shape) != shape:
        raise ValueError(f"{tokens_path}: {tokens.dtype} {list(tokens.shape)}, but the cache "
                         f"recorded floats of shape {shape}; {fix}")
    if labels.dtype.kind not in "iu" or labels.shape != (tokens.shape[0],):
        raise ValueError(f"{labels_path}: {labels.dtype} {list(labels.shape)}, but the cache "
                         f"needs {tokens.shape[0]} integer labels; {fix}")
    return tokens, torch.from_numpy(labels.astype(np.int64))


def probe_cell(spec: ProbeSpec, out: Path, meta: dict, pool: str, seed: int) -> dict:
    """Trains one pool's head on the cached tokens and scores it; returns the cell record."""
    folder = Path(out) / "tokens"
    train_x, train_y = cached_split(folder, "train", meta)
    test_x, test_y = cached_split(folder, "test", meta)
    torch.manual_seed(seed)
    head = ProbeHead(pool, meta, copy.deepcopy(_load_norm(folder, meta)))
    exponents = [q for n, q in head.named_parameters() if n.endswith(".p") and q.requires_grad]
    others = [q for n, q in head.named_parameters() if not n.endswith(".p") and q.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": others, "weight_decay": spec.weight_decay},
         {"params": exponents, "weight_decay": 0.0, "lr": spec.lr * spec.p_lr_mult}],
        lr=spec.lr)
    steps = spec.epochs * -(-len(train_y) // spec.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    loop = StepLoop(head, optimizer)
    generator = np.random.default_rng(seed)

    def batch_loss(net: nn.Module, batch: tuple[np.ndarray, Tensor]) -> tuple[Tensor, int]:
        rows, x = batch
        return nn.functional.cross_entropy(net(x), train_y[rows]), len(rows)

    start = time.perf_counter()
    for _ in range(spec.epochs):
        order = generator.permutation(len(train_y))
        loop.train_one_epoch(head, _batches(train_x, order, spec.batch_size),
                             -(-len(order) // spec.batch_size), batch_loss,
                             after_step=schedule.step)
    train_seconds = time.perf_counter() - start
    head.eval()
    logits, embeddings = [], []
    with torch.inference_mode():
        for _, x in _batches(test_x, np.arange(len(test_y)), 512):
            embedding = head.embed(x)
            embeddings.append(embedding)
            logits.append(head.head(embedding))
    logits, embeddings = torch.cat(logits), torch.cat(embeddings)
    result = {
        "spec": {"pool": pool, "seed": seed},
        "accuracy": float((logits.argmax(1) == test_y).float().mean()),
        "loss": float(nn.functional.cross_entropy(logits, test_y)),
        "retrieval": retrieval_metrics(embeddings, test_y),
        "p": None if (p := learned_exponents(head.pool)) is None else p.tolist(),
        "parameters": sum(q.numel() for q in head.parameters() if q.requires_grad),
        "train_seconds": train_seconds, "n": len(test_y),
    }
    heads = meta["num_heads"]
    if heads and heads > 1 and not pool_info(pool).cls_token:
        with torch.inference_mode():
            pooled = head.pool(torch.from_numpy(np.asarray(test_x[:2048], dtype=np.float32)))
        result["dependence"] = group_dependence(pooled, heads)["mean"]
    return result


def run_probe(
    spec: ProbeSpec,
    out: str | Path,
    *,
    device: torch.device | None = None,
    on_batch: Callable[[str, int, int], None] | None = None,
    on_cell: Callable[[dict, bool], None] | None = None,
    launch: Launch | None = None,
    on_status: Callable[[dict[str, int]], None] | None = None,
) -> tuple[dict, list[dict]]:
    """Caches the tokens (once, in this process), then probes every pool x seed (resumably),
    one after the other here or as ``launch`` says (SLURM: one array element per cell,
    ``on_status`` hears the counts of pending / running / done / failed cells).

    Returns:
        (the token cache's meta, every cell's record in (pool, seed) order).
    """
    folder = probe_folder(out)
    with folder.hold():
        # the data by content: the token cache's key holds its fingerprint, not its path
        folder.check_settings(spec.to_json(), ignore=("pools", "seeds", "data"))
        meta = cache_tokens(spec, folder.path, device=device, on_batch=on_batch)
        folder.write_settings(spec.to_json())
        cells, done = [], {}
        for pool in spec.pools:
            for seed in range(spec.seeds):
                name = f"{pool}-seed{seed}"
                record, _ = folder.finished(name)
                if record is None:
                    cells.append(Cell(name, (pool, seed)))
                else:
                    done[name] = record
                    if on_cell is not None:
                        on_cell(record, True)
        grid = Grid(_probe_cell, (spec, str(folder.path), meta), cells)
        executor = (launch or Launch()).executor(folder.path, on_status=on_status)
        done.update(executor.run(
            grid, on_result=None if on_cell is None else lambda cell, r: on_cell(r, False)))
    names = [f"{pool}-seed{seed}" for pool in spec.pools for seed in range(spec.seeds)]
    return meta, [done[name] for name in names]


def probe_folder(out: str | Path) -> RunFolder:
    """A probe's folder: settings ``probe_spec.json``, one record ``cells/<pool>-seed<k>.json``
    per cell."""
    return RunFolder(out, what="probe", settings="probe_spec.json",
                     records="cells/{name}.json", item="probe cell")


def _probe_cell(shared: tuple, pool: str, seed: int) -> dict:
    """One pool x seed as a grid cell: trains and scores the head, writes its record."""
    spec, out, meta = shared
    record = probe_cell(spec, Path(out), meta, pool, seed)
    record["torch_threads"] = torch.get_num_threads()
    return probe_folder(out).finish(f"{pool}-seed{seed}", record)


PROBE_METRICS = (
    ("accuracy", "linear-probe top-1 (%)", 100.0),
    ("recall@1", "k-NN Recall@1 (%)", 100.0),
    ("map@r", "mAP@R (%)", 100.0),
    ("dependence", "head dependence (CKA)", 1.0),
)


def write_probe_report(out: str | Path, spec: ProbeSpec, meta: dict, records: Sequence[dict],
                       command: str) -> Path:
    """probe.md (table with the cost of each step), probe.json, probe.csv, probe.png."""
    from poolwise._io import write_text
    from poolwise.vision.compare import pool_table, summarise_pools
    from poolwise.vision.compare_plots import plot_metrics

    out = Path(out)
    rows = summarise_pools(records, PROBE_METRICS)
    per_cell = [r["train_seconds"] for r in records]
    weights = ("timm's pretrained weights" if spec.pretrained else
               f"`{spec.checkpoint}`" if spec.checkpoint else "random initialisation")
    lines = [
        "# Frozen-backbone pool probe", "",
        f"Command: `{command}`", "",
        f"Backbone `{spec.model}` {spec.model_kwargs or ''} with {weights}, frozen; data "
        f"`{spec.data}`, {len(meta['classes'])} classes, tokens {meta['shapes']['train']} "
        f"(train) / {meta['shapes']['test']} (test) cached as {spec.dtype}. Head: pool, "
        f"{'the frozen post-pool norm, ' if meta['norm'] == 'pooled' else ''}linear; AdamW "
        f"lr {spec.lr} (p x{spec.p_lr_mult}), {spec.epochs} epochs, batch {spec.batch_size}.",
        "",
        pool_table(rows, PROBE_METRICS), "",
        f"Cost: the backbone pass over all images (once) {meta['seconds']:.1f} s; each pool x "
        f"seed head {min(per_cell):.1f} to {max(per_cell):.1f} s on the cached tokens.", "",
        "![metrics](probe.png)", "",
    ]
    write_text(out / "probe.md", "\n".join(lines))
    write_json(out / "probe.json", {"command": command, "spec": spec.to_json(),
                                    "cache_seconds": meta["seconds"], "rows": rows,
                                    "cells": list(records)})
    header = "pool,seed,accuracy,recall@1,map@r,dependence,train_seconds,p\n"
    body = "".join(
        f"{r['spec']['pool']},{r['spec']['seed']},{r['accuracy']},"
        f"{r['retrieval']['recall@1']},{r['retrieval']['map@r']},{r.get('dependence', '')},"
        f"{r['train_seconds']:.3f},{' '.join(f'{v:.4f}' for v in r['p'] or [])}\n"
        for r in records)
    write_text(out / "probe.csv", header + body)
    plot_metrics(out / "probe.png", rows, PROBE_METRICS)
    return out / "probe.md"
