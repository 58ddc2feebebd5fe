"""A trained pain-behaviour detector and everything inference needs, in one safetensors file.

The file's tensors are the model's state dict (so it loads like any weights file); its
metadata holds, as JSON under ``poolwise_detector``: the model name and arguments, the channel
names in order, the frame rate, the window length and hop in frames, the z-score statistics the
model was trained with, the class names, and (two classes) the decision threshold chosen on
validation windows. A two-class detector gives the protective-class probability per window; a
K-class one (K > 2) gives all K probabilities and predicts their argmax.
:class:`Detector` refuses input whose channel count, channel names or frame rate differ.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from poolwise._io import safetensors_bytes, write_bytes
from poolwise.pain.constants import MAX_ABS_Z
from poolwise.pain.data.dataset import BINARY_CLASSES

FORMAT = "poolwise-pain-detector/1"


def choose_threshold(y_true: np.ndarray, prob: np.ndarray) -> float:
    """The probability threshold with the best macro F1 on ``(y_true, prob)``; ties go to the
    threshold nearest 0.5, and 0.5 is returned when only one class is present."""
    from poolwise.pain.metrics import binary_metrics

    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return 0.5
    candidates = np.unique(np.concatenate([np.asarray(prob, dtype=np.float64), [0.5]]))
    best, best_key = 0.5, (-1.0, 0.0)
    for t in candidates:
        f1 = binary_metrics(y_true, prob, threshold=float(t))["macro_f1"] or 0.0
        key = (round(f1, 12), -abs(t - 0.5))
        if key > best_key:
            best, best_key = float(t), key
    return best


@dataclass
class DetectorConfig:
    """What inference needs besides the weights; validated on construction.

    Raises:
        ValueError: naming the field, for an unknown model, non-positive window, hop or frame
            rate, repeated channel names, non-finite means, stds that are not finite and
            positive, a threshold outside [0, 1], or fewer than two class names.
    """

    model: str
    model_kwargs: dict
    channel_names: tuple[str, ...]
    frame_rate: float
    window: int
    hop: int
    mean: list[float]
    std: list[float]
    threshold: float = 0.5
    provenance: dict = field(default_factory=dict)
    class_names: tuple[str, ...] = BINARY_CLASSES

    def __post_init__(self) -> None:
        from poolwise.pain.models import list_models

        if self.model not in list_models():
            raise ValueError(f"model {self.model!r} is not a poolwise pain model "
                             f"({', '.join(list_models())})")
        if not isinstance(self.model_kwargs, dict) or not isinstance(self.provenance, dict):
            raise ValueError("model_kwargs and provenance must be JSON objects")
        if isinstance(self.channel_names, str) or not all(
                isinstance(c, str) for c in self.channel_names):
            raise ValueError(f"channel_names must be a list of names, got {self.channel_names!r}")
        self.channel_names = tuple(self.channel_names)
        n = len(self.channel_names)
        if n == 0:
            raise ValueError("channel_names is empty")
        repeated = sorted({c for c in self.channel_names if self.channel_names.count(c) > 1})
        if repeated:
            raise ValueError(f"channel names must be unique; repeated: {', '.join(repeated)}")
        for name in ("window", "hop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive number of frames, got {value!r}")
        if not _is_number(self.frame_rate) or not 0 < self.frame_rate < math.inf:
            raise ValueError(f"frame_rate must be a positive number of Hz, got "
                             f"{self.frame_rate!r}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if not isinstance(values, (list, tuple)) or not all(map(_is_number, values)):
                raise ValueError(f"{name} must be a list of numbers, one per channel")
            if len(values) != n:
                raise ValueError(
                    f"{n} channel names but {len(self.mean)} means and {len(self.std)} stds")
        bad = [c for c, m in zip(self.channel_names, self.mean, strict=True)
               if not math.isfinite(m)]
        if bad:
            raise ValueError(f"z-score mean is not finite for channel(s) {', '.join(bad[:6])}")
        bad = [c for c, s in zip(self.channel_names, self.std, strict=True)
               if not (math.isfinite(s) and s > 0)]
        if bad:
            raise ValueError(f"z-score std must be finite and > 0; it is not for channel(s) "
                             f"{', '.join(bad[:6])}")
        if not _is_number(self.threshold) or not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")
        if (isinstance(self.class_names, str) or len(self.class_names) < 2
                or not all(isinstance(c, str) for c in self.class_names)
                or len(set(self.class_names)) != len(self.class_names)):
            raise ValueError(f"class_names must be two or more distinct names, got "
                             f"{self.class_names!r}")
        self.class_names = tuple(self.class_names)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def to_json(self) -> str:
        fields = {**self.__dict__, "channel_names": list(self.channel_names)}
        if self.class_names == BINARY_CLASSES:  # two-class files keep their bytes
            del fields["class_names"]
        else:
            fields["class_names"] = list(self.class_names)
        return json.dumps(fields, sort_keys=True, allow_nan=False)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def detector_bytes(config: DetectorConfig, state: dict[str, Tensor]) -> bytes:
    """The detector file's content (stable bytes for equal weights and config).

    Raises:
        ValueError: naming the tensors, when a weight is NaN or inf.
    """
    _check_weights(state)
    return safetensors_bytes(state, {"format": FORMAT, "poolwise_detector": config.to_json()})


def save_detector(path: str | Path, config: DetectorConfig, state: dict[str, Tensor]) -> Path:
    """Writes the weights and the config atomically."""
    return write_bytes(path, detector_bytes(config, state))


def _check_weights(state: dict[str, Tensor], where: str = "the model") -> None:
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{where}: weights hold NaN or inf in {', '.join(bad[:5])}"
                         + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))


def read_detector(path: str | Path) -> tuple[DetectorConfig, dict[str, Tensor]]:
    """The config and the weights of a detector file, both validated.

    Raises:
        FileNotFoundError: when there is no such file.
        ValueError: naming the file, when it is not a poolwise detector (e.g. a weights file
            written by an older poolwise without the inference metadata), its metadata is
            invalid, or a weight is NaN or inf.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detector checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as error:
        raise ValueError(f"{path}: not a readable safetensors file ({error}); it may be "
                         "truncated: re-run the fold that wrote it") from error
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"{path}: no detector metadata (format {metadata.get('format')!r}, expected "
            f"{FORMAT!r}); fold weights written before detector checkpoints existed lack "
            "the frame rate, hop and threshold: re-run that fold"
        )
    try:
        fields = json.loads(metadata.get("poolwise_detector", ""))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: detector metadata is not valid JSON ({error})") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{path}: detector metadata is not a JSON object")
    known = {f.name for f in dataclasses.fields(DetectorConfig)}
    required = {f.name for f in dataclasses.fields(DetectorConfig)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    unknown, missing = sorted(set(fields) - known), sorted(required - set(fields))
    if unknown or missing:
        raise ValueError(f"{path}: invalid detector metadata (unknown fields {unknown}, "
                         f"missing fields {missing})")
    try:
        config = DetectorConfig(**fields)
    except ValueError as error:
        raise ValueError(f"{path}: invalid detector metadata: {error}") from None
    _check_weights(state, str(path))
    return config, state


class ProbabilityNet(nn.Module):
    """Normalisation + model + softmax: raw windows -> protective probability (B,) for a
    two-class model, or every class's probability (B, K) for K > 2. The one inference path:
    :class:`Detector`, the streaming detector and the exports all run it.

    :meth:`forward_checked` also says which windows may be trusted: every z-score within
    ``max_abs_z`` and a finite probability.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float],
                 max_abs_z: float = MAX_ABS_Z) -> None:
        super().__init__()
        if not max_abs_z > 0:
            raise ValueError(f"max_abs_z must be > 0, got {max_abs_z}")
        self.model = model
        self.max_abs_z = float(max_abs_z)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32)[None, :, None])
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32)[None, :, None])

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_checked(x)[0]

    def forward_checked(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(probability (B,) or (B, K), valid (B,) bool)."""
        z = (x - self.mean) / self.std
        prob = torch.softmax(self.model(z).float(), dim=1)
        finite = torch.isfinite(prob).all(dim=1)
        if prob.shape[1] == 2:
            prob = prob[:, 1]
        in_range = (z.abs() <= self.max_abs_z).flatten(1).all(dim=1)  # False for NaN too
        return prob, in_range & finite


class Detector:
    """Raw windows in, protective-behaviour probabilities out.

    ``Detector.load(path)`` builds the model, loads its weights and keeps the normalisation;
    :meth:`predict_proba` checks the input against the checkpoint first and refuses windows it
    cannot score (non-finite values, z-scores beyond ``max_abs_z``, a non-finite output).
    """

    def __init__(self, config: DetectorConfig, state: dict[str, Tensor], *,
                 max_abs_z: float = MAX_ABS_Z, source: str = "detector") -> None:
        from poolwise.pain.models import create_model

        self.config = config
        try:
            self.model = create_model(config.model, **config.model_kwargs)
            self.model.load_state_dict(state)
            self.net = ProbabilityNet(self.model, config.mean, config.std, max_abs_z).eval()
            with torch.inference_mode():  # the model must take the windows the config names
                self.net(torch.zeros(1, len(config.channel_names), config.window))
        except (TypeError, RuntimeError, ValueError) as error:
            first = str(error).strip().splitlines()[0]
            raise ValueError(f"{source}: the weights and the config do not make a working "
                             f"{config.model} for {len(config.channel_names)} channels x "
                             f"{config.window} frames ({first})") from None

    @classmethod
    def load(cls, path: str | Path, *, max_abs_z: float = MAX_ABS_Z) -> Detector:
        return cls(*read_detector(path), max_abs_z=max_abs_z, source=str(path))

    @property
    def threshold(self) -> float:
        return self.config.threshold

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    def check(self, *, n_channels: int | None = None, channel_names: Sequence[str] | None = None,
              frame_rate: float | None = None, window: int | None = None) -> None:
        """Raises ValueError saying what differs from the checkpoint."""
        c = self.config
        if n_channels is not None and n_channels != len(c.channel_names):
            raise ValueError(f"input has {n_channels} channels, the detector expects "
                             f"{len(c.channel_names)} ({', '.join(c.channel_names[:4])}, ...)")
        if channel_names is not None:
            names = tuple(channel_names)
            if len(names) != len(c.channel_names):
                raise ValueError(f"input has {len(names)} channels, the detector expects "
                                 f"{len(c.channel_names)}")
            for i, (got, want) in enumerate(zip(names, c.channel_names, strict=True)):
                if got != want:
                    raise ValueError(f"channel {i} is {got!r}, the detector expects {want!r} "
                                     "(same names in the same order)")
        if frame_rate is not None and abs(frame_rate - c.frame_rate) > 1e-6 * c.frame_rate:
            raise ValueError(f"input is sampled at {frame_rate:g} Hz, the detector expects "
                             f"{c.frame_rate:g} Hz; resample first")
        if window is not None and window != c.window:
            raise ValueError(f"windows have {window} frames, the detector expects {c.window}")

    @torch.inference_mode()
    def predict_proba(self, X: np.ndarray | Tensor, *, channel_names: Sequence[str] | None = None,
                      frame_rate: float | None = None) -> np.ndarray:
        """Protective-class probability of each raw window ``(n, channels, window)``: shape
        (n,); for a K-class detector (K > 2) every class's probability, (n, K).

        Raises:
            ValueError: naming the first window (and channel) at fault, for input that does not
                match the checkpoint, NaN/inf values, z-scores beyond ``max_abs_z`` or a
                non-finite probability; no probability is returned for a batch with any.
        """
        X = torch.as_tensor(np.asarray(X, dtype=np.float32))
        if X.ndim != 3:
            raise ValueError(f"expected windows (n, channels, time), got shape {tuple(X.shape)}")
        self.check(n_channels=X.shape[1], channel_names=channel_names, frame_rate=frame_rate,
                   window=X.shape[2])
        bad = ~torch.isfinite(X)
        if bad.any():
            i, c, t = (int(v) for v in bad.nonzero()[0])
            raise ValueError(
                f"{int(bad.sum())} input values are NaN or inf (first: window {i}, channel "
                f"{self.config.channel_names[c]}, frame {t}); the streaming detector has a "
                "policy for gaps, this call does not")
        prob, valid = self.net.forward_checked(X)
        if not valid.all():
            i = int((~valid).nonzero()[0])
            z = ((X[i] - self.net.mean[0]) / self.net.std[0]).abs()
            c, t = divmod(int(torch.nan_to_num(z, nan=torch.inf).argmax()), X.shape[2])
            raise ValueError(
                f"{int((~valid).sum())} of {len(X)} windows cannot be scored (first: window "
                f"{i}: |z| = {float(z[c, t]):.3g} on channel {self.config.channel_names[c]} at "
                f"frame {t}, bound {self.net.max_abs_z:g}): "
                "the input is far outside the training data (wrong units or a sensor fault?)")
        return prob.numpy()

    def predict(self, X: np.ndarray | Tensor, **kwargs: Any) -> np.ndarray:
        """Class indices: probability >= threshold (two classes), else the argmax."""
        prob = self.predict_proba(X, **kwargs)
        if prob.ndim == 2:
            return prob.argmax(1).astype(np.int64)
        return (prob >= self.threshold).astype(np.int64)
