"""Training throughput of L-SFAN: the authors' setup against poolwise's, side by side.

Authors' setup (re-created here, same network): one .mat file per window read by a
``Dataset`` through ``scipy.io.loadmat``, a ``DataLoader`` with batch 40, a model built from
plain ``nn`` layers, the 2 torch threads of this machine. poolwise, step by step: all windows
in memory as one tensor (with online augmentation, which the authors precompute), then
``torch.compile``, then fold-level processes (two folds at once, one thread each, the way
``poolwise pain loso --jobs 2`` runs). The same poolwise loop then runs a four-class
configuration (K = 4 outputs, class weights from the labels), the multi-class path of
``pain loso``, against the same authors' baseline. Also checks that both definitions give the
same eval logits for the same weights. Ratios are measured in one run on the same synthetic
windows.

``--baselines`` adds a second table: one fold's fit and scoring for L-SFAN and each of the
time-series field's baselines (the ROCKET family, InceptionTime) on the same windows, through
the training loop's one entry point (:func:`poolwise.pain.train.fit`, ``--epochs`` epochs for
the networks, closed form for the ROCKET models), with seconds per fold and windows/s.

    python benchmarks/bench_loso.py [--windows 2000] [--baselines] [--epochs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.io
import torch
from torch import nn

from poolwise.pain.augment import augment_batch, n_variants
from poolwise.pain.models import create_model, model_input_kwargs
from poolwise.pain.train import TrainConfig, class_probabilities, class_weights, fit

BATCH = 40


class AuthorsStyleLSFAN(nn.Module):
    """The published network written the plain way: (B, 1, 180, 30) images, seq-first encoder."""

    def __init__(self) -> None:
        super().__init__()
        blocks = []
        for i, (a, b) in enumerate([(1, 2), (2, 4), (4, 8), (8, 16)]):
            blocks += [nn.Conv2d(a, b, 3, padding=(0, 1)), nn.BatchNorm2d(b), nn.ReLU()]
            if i % 2:
                blocks.append(nn.MaxPool2d((2, 1)))
        self.FrameFeatureExtractor = nn.Sequential(*blocks)
        layer = nn.TransformerEncoderLayer(30, 5, dim_feedforward=30, dropout=0.2)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.Classifier = nn.Sequential(nn.Flatten(), nn.Linear(480, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 180, 30)
        tokens = self.FrameFeatureExtractor(x).mean(2)  # (B, 16, 30)
        tokens = self.encoder(tokens.permute(1, 0, 2)).permute(1, 0, 2)
        return self.Classifier(tokens)


class MatFileWindows(torch.utils.data.Dataset):
    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        content = scipy.io.loadmat(self.files[i])
        x = torch.from_numpy(content["data"]).float().unsqueeze(0)  # (1, 180, 30)
        return x, int(content["label"][0, 0])


def authors_setup(folder: Path, n_windows: int) -> float:
    torch.manual_seed(0)
    model = AuthorsStyleLSFAN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor([0.3, 0.7]))
    files = sorted(folder.glob("*.mat"))
    loader = torch.utils.data.DataLoader(MatFileWindows(files), batch_size=BATCH, shuffle=True)
    model.train()
    seen, start = 0, time.perf_counter()
    while seen < n_windows:
        for x, y in loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(x)
            if seen >= n_windows:
                break
    return seen / (time.perf_counter() - start)


def poolwise_loop(X: torch.Tensor, y: torch.Tensor, n_windows: int, compile_: bool,
                  n_classes: int = 2) -> float:
    torch.manual_seed(0)
    model = create_model("lsfan", n_classes=n_classes)
    forward = torch.compile(model, dynamic=False) if compile_ else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    weight = (torch.tensor([0.3, 0.7]) if n_classes == 2
              else torch.from_numpy(class_weights(y.numpy(), n_classes)))
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    generator = torch.Generator().manual_seed(0)
    model.train()

    def step(index: torch.Tensor) -> None:
        variant = torch.randint(n_variants(), (len(index),), generator=generator)
        loss = loss_fn(forward(augment_batch(X[index], variant, generator)), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    order = torch.randperm(len(X), generator=generator)
    step(order[:BATCH])  # warm-up (and compilation) outside the timing
    seen, start = 0, time.perf_counter()
    while seen < n_windows:
        order = torch.randperm(len(X), generator=generator)
        for i in range(0, len(X) - BATCH + 1, BATCH):
            step(order[i : i + BATCH])
            seen += BATCH
            if seen >= n_windows:
                break
    return seen / (time.perf_counter() - start)


def _fold_process(X, y, n_windows, barrier, results) -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    poolwise_loop(X, y, BATCH, compile_=True)  # compile before the common start
    barrier.wait()
    results.put(poolwise_loop(X, y, n_windows, compile_=True))


def fold_processes(X: torch.Tensor, y: torch.Tensor, n_windows: int, jobs: int = 2) -> float:
    context = mp.get_context("spawn")
    barrier, results = context.Barrier(jobs), context.Queue()
    procs = [
        context.Process(target=_fold_process, args=(X, y, n_windows, barrier, results))
        for _ in range(jobs)
    ]
    for p in procs:
        p.start()
    rates = [results.get() for _ in procs]
    for p in procs:
        p.join()
    return float(sum(rates))


def eval_difference(X: torch.Tensor) -> float:
    torch.manual_seed(1)
    theirs = AuthorsStyleLSFAN().eval()
    ours = create_model("lsfan")
    state = {
        k.replace("FrameFeatureExtractor.", "cnn.").replace("Classifier.", "classifier."): v
        for k, v in theirs.state_dict().items()
    }
    ours.load_state_dict(state)
    ours.eval()
    with torch.inference_mode():
        a = theirs(X[:256].transpose(1, 2).unsqueeze(1))
        b = ours(X[:256])
    return float((a - b).abs().max())


BASELINES = ("lsfan", "minirocket", "multirocket", "hydra", "inception_time")


def baseline_fold(name: str, X: np.ndarray, y: np.ndarray, epochs: int) -> dict:
    """One fold of ``name``: fit on 80 % of the windows (model selection on 10 %), score the
    last 10 %; seconds of each part and the windows/s they amount to."""
    n = len(X)
    train, select, test = np.split(np.arange(n), [int(0.8 * n), int(0.9 * n)])
    torch.manual_seed(0)
    model = create_model(name, **model_input_kwargs(name, X.shape[1], X.shape[2]))
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    start = time.perf_counter()
    fit(model, Xt[train], yt[train], Xt[select], yt[select], TrainConfig(epochs=epochs),
        torch.Generator().manual_seed(0))
    fitted = time.perf_counter() - start
    start = time.perf_counter()
    class_probabilities(model, Xt[test])
    scored = time.perf_counter() - start
    closed = getattr(model, "closed_form", False)
    seen = len(train) * (1 if closed else epochs)
    return {"model": name, "fit_s": fitted, "score_s": scored, "fold_s": fitted + scored,
            "fit_windows_per_s": seen / fitted, "score_windows_per_s": len(test) / scored,
            "epochs": None if closed else epochs}


def baselines(X: np.ndarray, y: np.ndarray, epochs: int) -> list[dict]:
    rows = [baseline_fold(name, X, y, epochs) for name in BASELINES]
    base = rows[0]["fold_s"]
    print(f"\none fold on the same {len(X)} windows (80 % fit, 10 % selection, 10 % scored), "
          "2 threads; networks: "
          f"{epochs} epochs; ROCKET: closed form (the first call of each kind compiles "
          "aeon's numba kernels, here before the timing)")
    print("| model | fit (s) | fit windows/s | score windows/s | fold (s) | x L-SFAN's fold time |"
          "\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['fit_s']:.1f} | {r['fit_windows_per_s']:,.0f} | "
              f"{r['score_windows_per_s']:,.0f} | {r['fold_s']:.1f} | {r['fold_s'] / base:.2f}x |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=2000, help="windows timed per setup")
    parser.add_argument("--json", help="also write the numbers here")
    parser.add_argument("--baselines", action="store_true",
                        help="also time one fold of L-SFAN and each baseline")
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs of the networks' fold in --baselines")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1000, 30, 180)).astype(np.float32)
    y = (rng.random(1000) < 0.3).astype(np.int64)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(len(X)):  # the authors' layout: one (180, 30) matrix per window file
            scipy.io.savemat(folder / f"w{i:05d}.mat", {"data": X[i].T.astype(np.float64),
                                                        "label": np.array([[y[i]]])})
        rows.append(("authors' setup: .mat per window, DataLoader, batch 40, 2 threads",
                     authors_setup(folder, args.windows)))
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    rows.append(("poolwise: windows in memory, online augmentation, batch 40, 2 threads",
                 poolwise_loop(Xt, yt, args.windows, compile_=False)))
    rows.append(("+ torch.compile, 2 threads",
                 poolwise_loop(Xt, yt, args.windows, compile_=True)))
    rows.append(("+ two folds at once (processes, 1 thread each; total)",
                 fold_processes(Xt, yt, args.windows)))
    y4 = torch.from_numpy(rng.integers(0, 4, len(X)))
    rows.append(("4 classes: poolwise + torch.compile, 2 threads",
                 poolwise_loop(Xt, y4, args.windows, compile_=True, n_classes=4)))
    base = rows[0][1]
    print("| setup | windows/s | x authors' |\n|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f}x |")
    diff = eval_difference(Xt)
    print(f"\neval logits, same weights, both definitions: max |difference| = {diff:.2e}")
    folds = []
    if args.baselines:
        for name in BASELINES[1:4]:  # compile aeon's kernels outside the timing
            baseline_fold(name, X[:60], np.arange(60) % 2, 1)
        folds = baselines(X, y, args.epochs)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"rows": [{"setup": n, "windows_per_s": r} for n, r in rows], "eval_max_abs": diff,
             "baselines": folds}, indent=1))


if __name__ == "__main__":
    main()
