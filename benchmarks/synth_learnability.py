"""Is the synthetic cohort learnable, and is leave-one-subject-out non-trivial?

Trains a fresh L-SFAN per held-out subject for a few epochs (z-score fitted on the training
subjects only; no augmentation, no model selection) and prints the held-out macro F1 next to
training-set accuracy and a majority-class baseline. A sanity check of the generator, not the
LOSO protocol of issue 5.

    python benchmarks/synth_learnability.py --held-out C01 C05 P03 P10 P15 --epochs 4
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch

from poolwise.pain import LSFAN
from poolwise.pain.data.readers import read_fame_folder
from poolwise.pain.data.synth import write_synthetic_cohort


def macro_f1(y, pred):
    scores = []
    for c in (0, 1):
        tp = np.sum((pred == c) & (y == c))
        denom = np.sum(pred == c) + np.sum(y == c)
        scores.append(2 * tp / denom if denom else 1.0)
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held-out", nargs="+", default=["C01", "C05", "P03", "P10", "P15"])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_cohort(tmp, seed=args.seed)
        data = read_fame_folder(tmp)
    print("| held-out | windows | protective | majority macro F1 | train acc | held-out macro F1 |")
    print("|---|---|---|---|---|---|")
    for subject in args.held_out:
        torch.manual_seed(args.seed)
        test = data.subject == subject
        xtr, ytr = data.X[~test], data.y[~test]
        mean, std = xtr.mean((0, 2), keepdims=True), xtr.std((0, 2), keepdims=True) + 1e-6
        xtr_t = torch.from_numpy((xtr - mean) / std)
        xte_t = torch.from_numpy((data.X[test] - mean) / std)
        ytr_t = torch.from_numpy(ytr)
        counts = np.bincount(ytr, minlength=2)
        weights = torch.tensor(1 - counts / counts.sum(), dtype=torch.float32)
        model = LSFAN()
        opt = torch.optim.Adam(model.parameters(), lr=4e-3)
        loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
        for _ in range(args.epochs):
            model.train()
            for idx in torch.randperm(len(ytr_t)).split(160):
                opt.zero_grad()
                loss_fn(model(xtr_t[idx]), ytr_t[idx]).backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            train_acc = (model(xtr_t).argmax(1) == ytr_t).float().mean().item()
            pred = model(xte_t).argmax(1).numpy()
        y = data.y[test]
        majority = macro_f1(y, np.full_like(y, np.bincount(ytr).argmax()))
        print(
            f"| {subject} | {int(test.sum())} | {y.mean():.0%} | {majority:.2f} "
            f"| {train_acc:.2f} | {macro_f1(y, pred):.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
