"""The ROCKET family as pain models: aeon's random-kernel transforms, then a ridge classifier.

MiniRocket (Dempster et al., KDD 2021), MultiRocket (Tan et al., DMKD 2022) and Hydra
(Dempster et al., DMKD 2023) turn each window into thousands of features with random
convolutional kernels (Hydra: groups of competing kernels); a linear classifier on those
features is the whole model. The transforms are aeon's, used as they are; the classifier is the
one their papers use: the features scaled (MiniRocket, MultiRocket: divided by their standard
deviation; Hydra: the papers' sparse scaling of the square-rooted counts), then
``sklearn.linear_model.RidgeClassifierCV`` with the regularisation chosen among
``10^-3 .. 10^3`` by its efficient leave-one-out cross-validation.

Fitting is closed-form (:meth:`RocketRidge.fit_windows`): no epochs and no optimiser. Everything
fitted from data (the kernels' biases, the scaler, the ridge and its regularisation) sees the
training windows only; each window is weighted like the networks' loss (``1 - n_c / N`` for its
class, scaled to mean 1, so balanced classes give the papers' unweighted ridge). The fitted
state lives in buffers, so a fold's detector checkpoint (safetensors) holds all of it and
:meth:`~torch.nn.Module.load_state_dict` restores a fitted model without pickle.

Scores: the logits are the ridge's decision values (two classes: ``(-d, d)`` with ``d`` the
signed decision), so the softmax ranks windows and thresholds at 0.5 exactly as the ridge
predicts; it is a score for ROC-AUC and PR-AUC, not a calibrated probability.

The transforms run in numba (MiniRocket, MultiRocket) or eager torch outside the module's
graph, so these models cannot be exported to ONNX/TorchScript and have no feature map for
Grad-CAM; they score windows through :class:`~poolwise.pain.deploy.detector.Detector` and the
stream.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import Tensor, nn

from poolwise.pain.models.common import check_batch

try:
    from aeon.transformations.collection.convolution_based import (
        HydraTransformer,
        MiniRocket,
        MultiRocket,
    )
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.preprocessing import StandardScaler
except ImportError as error:  # pragma: no cover - exercised by the registry's message test
    raise ImportError(
        "the ROCKET-family models (minirocket, multirocket, hydra) run aeon's transforms: "
        "pip install 'poolwise[rocket]'") from error

ALPHAS = np.logspace(-3, 3, 10)  # the ridge grid of the ROCKET papers
ABSENT = -1e4  # the decision of a class that no training window holds
CHUNK = 512  # windows per transform call: bounds the memory of Hydra's convolution maps

# kind: (aeon class, fitted attributes holding tuples of arrays, shortest window, scaler)
_KINDS = {
    "minirocket": (MiniRocket, ("parameters",), 9, "std"),
    "multirocket": (MultiRocket, ("parameter", "parameter1"), 10, "std"),
    "hydra": (HydraTransformer, (), 9, "sparse"),
}


@contextlib.contextmanager
def _threads_kept():
    """aeon's numba transforms set numba's thread count and restore numba's own default,
    which (sharing the OpenMP runtime) changes torch's: keep torch's as it was."""
    threads = torch.get_num_threads()
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


def _hydra_state(transformer: HydraTransformer) -> list[Tensor]:
    inner = transformer._hydra
    return [inner.W, *inner.idx]


class RocketRidge(nn.Module):
    """A random-kernel transform (``kind``: minirocket, multirocket or hydra) and a ridge.

    Inputs ``(batch, n_channels, window)``; outputs logits ``(batch, n_classes)``. The model
    is unusable until :meth:`fit_windows` (or loading a fitted state) has run.
    """

    closed_form = True  # fitted by fit_windows, not by gradient steps

    def __init__(self, *, kind: str, n_channels: int = 30, window: int = 180,
                 n_classes: int = 2, n_kernels: int | None = None) -> None:
        super().__init__()
        if kind not in _KINDS:
            raise ValueError(f"unknown ROCKET kind {kind!r}; known: {', '.join(_KINDS)}")
        shortest = _KINDS[kind][2]
        if window < shortest:
            raise ValueError(
                f"{kind} needs windows of at least {shortest} frames (its kernels span 9 "
                f"frames{' of the first differences' if kind == 'multirocket' else ''}), got "
                f"{window}; make longer windows (`poolwise pain windows --window`)")
        if n_channels < 1 or n_classes < 2:
            raise ValueError(f"need n_channels >= 1 and n_classes >= 2, got {n_channels} and "
                             f"{n_classes}")
        self.kind, self.n_channels, self.window = kind, n_channels, window
        self.n_classes = n_classes
        self.n_kernels = n_kernels
        self._transformer = None
        for name in ("seed", "shift", "scale", "coef", "intercept", "alpha"):
            self.register_buffer(name, torch.empty(0))
        self._n_state = 0

    # -- the fitted transform -------------------------------------------------------------
    def _new_transformer(self, seed: int):
        cls = _KINDS[self.kind][0]
        kwargs = {"random_state": seed, "n_jobs": torch.get_num_threads()}
        if self.n_kernels is not None:
            kwargs["n_kernels"] = self.n_kernels
        if self.kind == "hydra":
            kwargs["output_type"] = "numpy"
        return cls(**kwargs)

    def _fit_transformer(self, X: np.ndarray, seed: int) -> None:
        with torch.random.fork_rng(devices=[]), _threads_kept():  # Hydra seeds torch's RNG
            self._transformer = self._new_transformer(seed).fit(X)
        state = (_hydra_state(self._transformer) if self.kind == "hydra" else
                 [torch.from_numpy(np.ascontiguousarray(a))
                  for attr in _KINDS[self.kind][1] for a in getattr(self._transformer, attr)])
        self._set_state(state)

    def _set_state(self, arrays: list[Tensor]) -> None:
        for i in range(self._n_state):
            delattr(self, f"state_{i}")
        for i, array in enumerate(arrays):
            self.register_buffer(f"state_{i}", array.clone())
        self._n_state = len(arrays)

    def _restore_transformer(self) -> None:
        """Rebuilds aeon's transformer from the buffers of a loaded state."""
        seed = int(self.seed)
        dummy = np.zeros((2, self.n_channels, self.window), np.float32)
        with torch.random.fork_rng(devices=[]), _threads_kept():
            transformer = self._new_transformer(seed).fit(dummy)
        arrays = [getattr(self, f"state_{i}") for i in range(self._n_state)]
        if self.kind == "hydra":
            transformer._hydra.W, transformer._hydra.idx = arrays[0], list(arrays[1:])
        else:
            attrs = _KINDS[self.kind][1]
            per = len(arrays) // len(attrs)
            for j, attr in enumerate(attrs):
                setattr(transformer, attr, tuple(a.numpy() for a in arrays[j * per:(j + 1) * per]))
        self._transformer = transformer

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the fitted arrays' shapes (and count) depend on the data: take them as they come
        names = sorted((k[len(prefix):] for k in state_dict
                        if k.startswith(prefix + "state_")), key=lambda n: int(n[6:]))
        self._set_state([state_dict[prefix + n] for n in names])
        for name in ("seed", "shift", "scale", "coef", "intercept", "alpha"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.fitted:
            self._restore_transformer()

    @property
    def fitted(self) -> bool:
        return self.coef.numel() > 0

    def features(self, X: np.ndarray) -> np.ndarray:
        """The transform's raw features of windows ``(n, n_channels, window)``, float32."""
        if self._transformer is None:
            raise RuntimeError(f"this {self.kind} model is not fitted: call fit_windows first")
        X = np.ascontiguousarray(X, dtype=np.float32)
        with _threads_kept():
            parts = [np.asarray(self._transformer.transform(X[i:i + CHUNK]), dtype=np.float32)
                     for i in range(0, len(X), CHUNK)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    # -- scaling and the ridge ------------------------------------------------------------
    def _scaled(self, F: Tensor) -> Tensor:
        if _KINDS[self.kind][3] == "sparse":  # Hydra's counts: sqrt, centre non-zeros, scale
            F = F.clamp_min(0).sqrt()
            return (F - self.shift) * (F != 0) / self.scale
        return F / self.scale

    def _fit_scaler(self, F: Tensor) -> None:
        if _KINDS[self.kind][3] == "sparse":
            F = F.clamp_min(0).sqrt()
            epsilon = (F == 0).float().mean(0) ** 4 + 1e-8
            self.shift, self.scale = F.mean(0), F.std(0) + epsilon
        else:  # the papers' StandardScaler(with_mean=False); (near-)constant features: scale 1
            scale = StandardScaler(with_mean=False).fit(F.numpy()).scale_.astype(np.float32)
            self.shift, self.scale = torch.zeros(len(scale)), torch.from_numpy(scale)

    def fit_windows(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray,
                    seed: int) -> dict:
        """Fits the transform, the scaler and the ridge on training windows ``X`` with class
        indices ``y`` and per-window weights; returns what was chosen (the ridge's ``alpha``,
        the feature count) and the weighted cross-entropy of the fitted logits on ``X``."""
        if X.shape[1:] != (self.n_channels, self.window):
            raise ValueError(f"{self.kind} was built for windows {self.n_channels} x "
                             f"{self.window}, got {tuple(X.shape[1:])}")
        self.seed = torch.tensor(seed, dtype=torch.int64)
        self._fit_transformer(np.asarray(X, np.float32), seed)
        F = torch.from_numpy(self.features(X))
        self._fit_scaler(F)
        # weights of mean 1: balanced classes give exactly the papers' unweighted ridge
        sample_weight = np.asarray(sample_weight, np.float64)
        sample_weight = sample_weight / sample_weight.mean()
        ridge = RidgeClassifierCV(alphas=ALPHAS)
        ridge.fit(self._scaled(F).numpy(), y, sample_weight=sample_weight)
        rc, ri = np.atleast_2d(ridge.coef_), np.atleast_1d(ridge.intercept_)
        if rc.shape[0] == 1:  # two classes present: one signed decision d, logits (-d, d)
            rc, ri = np.concatenate([-rc, rc]), np.concatenate([-ri, ri])
        # a class absent from the training windows gets a decision it never wins
        coef = np.zeros((self.n_classes, F.shape[1]), np.float32)
        intercept = np.full(self.n_classes, ABSENT, np.float32)
        coef[ridge.classes_.astype(np.int64)] = rc
        intercept[ridge.classes_.astype(np.int64)] = ri
        self.coef, self.intercept = torch.from_numpy(coef), torch.from_numpy(intercept)
        self.alpha = torch.tensor(float(ridge.alpha_))
        logits = self._scaled(F) @ self.coef.T + self.intercept
        losses = torch.nn.functional.cross_entropy(logits, torch.as_tensor(y), reduction="none")
        weights = torch.as_tensor(sample_weight, dtype=torch.float32)
        return {"alpha": float(ridge.alpha_), "n_features": int(F.shape[1]),
                "train_loss": float((losses * weights).sum() / weights.sum())}

    def n_fitted(self) -> int:
        """Numbers fitted to the data: the ridge's weights and intercepts (one decision for two
        classes, one per class otherwise) and the scaler's statistics."""
        rows = 1 if self.n_classes == 2 else self.n_classes
        scaler = self.scale.numel() * (2 if _KINDS[self.kind][3] == "sparse" else 1)
        return rows * (self.coef.shape[1] + 1) + scaler if self.fitted else 0

    def forward(self, x: Tensor) -> Tensor:
        check_batch(x, self.n_channels, self.window)
        if x.shape[2] != self.window:
            raise ValueError(f"{self.kind} was fitted to windows of {self.window} frames, got "
                             f"{x.shape[2]} (input shape {tuple(x.shape)})")
        F = torch.from_numpy(self.features(x.detach().cpu().numpy()))
        # in float64: a float32 product sums in another order for one window than for many
        decision = self._scaled(F).double() @ self.coef.double().T + self.intercept.double()
        return decision.float().to(x.device)


__all__ = ["ALPHAS", "RocketRidge"]
