"""A trained pain-behaviour detector and everything inference needs, in one safetensors file.

The file's tensors are the model's state dict (so it loads like any weights file); its
metadata holds, as JSON under ``poolwise_detector``: the model name and arguments, the channel
names in order, the frame rate, the window length and hop in frames, the z-score statistics the
model was trained with, and the decision threshold chosen on validation windows.
:class:`Detector` refuses input whose channel count, channel names or frame rate differ.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from poolwise._io import atomic_path

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

    def __post_init__(self) -> None:
        self.channel_names = tuple(self.channel_names)
        n = len(self.channel_names)
        if len(self.mean) != n or len(self.std) != n:
            raise ValueError(
                f"{n} channel names but {len(self.mean)} means and {len(self.std)} stds")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "channel_names": list(self.channel_names)})


def save_detector(path: str | Path, config: DetectorConfig, state: dict[str, Tensor]) -> Path:
    """Writes the weights and the config atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "poolwise_detector":
                                               config.to_json()})
    return Path(path)


def read_detector(path: str | Path) -> tuple[DetectorConfig, dict[str, Tensor]]:
    """The config and the weights of a detector file.

    Raises:
        ValueError: naming the file, when it is not a poolwise detector (e.g. a weights file
            written by an older poolwise without the inference metadata).
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
        raise ValueError(f"{path}: not a safetensors file ({error})") from error
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"{path}: no detector metadata (format {metadata.get('format')!r}, expected "
            f"{FORMAT!r}); fold weights written before detector checkpoints existed lack "
            "the frame rate, hop and threshold: re-run that fold"
        )
    return DetectorConfig(**json.loads(metadata["poolwise_detector"])), state


class ProbabilityNet(nn.Module):
    """Normalisation + model + softmax: raw windows -> protective probability (B,). The one
    inference path: :class:`Detector`, the streaming detector and the exports all run it."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32)[None, :, None])
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32)[None, :, None])

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model((x - self.mean) / self.std)
        return torch.softmax(logits.float(), dim=1)[:, 1]


class Detector:
    """Raw windows in, protective-behaviour probabilities out.

    ``Detector.load(path)`` builds the model, loads its weights and keeps the normalisation;
    :meth:`predict_proba` checks the input against the checkpoint first.
    """

    def __init__(self, config: DetectorConfig, state: dict[str, Tensor]) -> None:
        from poolwise.pain.models import create_model

        self.config = config
        self.model = create_model(config.model, **config.model_kwargs)
        self.model.load_state_dict(state)
        self.net = ProbabilityNet(self.model, config.mean, config.std).eval()

    @classmethod
    def load(cls, path: str | Path) -> Detector:
        return cls(*read_detector(path))

    @property
    def threshold(self) -> float:
        return self.config.threshold

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
        """Protective-class probability of each raw window ``(n, channels, window)``."""
        X = torch.as_tensor(np.asarray(X, dtype=np.float32))
        if X.ndim != 3:
            raise ValueError(f"expected windows (n, channels, time), got shape {tuple(X.shape)}")
        self.check(n_channels=X.shape[1], channel_names=channel_names, frame_rate=frame_rate,
                   window=X.shape[2])
        if not torch.isfinite(X).all():
            raise ValueError(f"{int((~torch.isfinite(X)).sum())} input values are NaN or inf; "
                             "the streaming detector has a policy for gaps, this call does not")
        return self.net(X).numpy()

    def predict(self, X: np.ndarray | Tensor, **kwargs) -> np.ndarray:
        return (self.predict_proba(X, **kwargs) >= self.threshold).astype(np.int64)
