"""L-SFAN: Lightweight Spatially-focused Attention Network (Ortigoso-Narro et al., arXiv
2406.16913) for protective-behaviour detection in motion capture + sEMG windows.

A window (channels, time) is read as a one-channel image (time x signal columns). Four 3x3
convolutions that shrink time only (padding (0, 1)) and two (2, 1) max-pools give a feature map
(B, K, T', S); an *oriented* pool reduces the time axis and keeps the sensor axis, giving K
tokens (one per CNN channel) of S features; one post-norm transformer encoder layer attends
across the K CNN channels; the flattened tokens feed a linear classifier.

The default configuration is the published network (8,282 trainable parameters). The oriented
pool is any pool of :mod:`poolwise.pooling` (``pool="ggem"`` with ``pool_groups=16`` gives one
learnable exponent per CNN channel), ``attention=False`` gives the paper's 2D-CNN-TAP ablation
and ``pool_axis="sensor"`` the 2D-CNN-SAP one (pooling over sensors, keeping time).
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any

import torch
from torch import Tensor, nn

from poolwise.pain.constants import WINDOW
from poolwise.pain.models.common import check_batch
from poolwise.pain.models.conv import ConvStack, LayoutConv2d, RowMaxPool2d
from poolwise.pooling import create_pool

POOL_AXES = ("time", "sensor")


def _cnn(widths: Sequence[int]) -> ConvStack:
    """conv-BN-ReLU blocks; a (2, 1) max-pool after every second one (time only)."""
    layers: list[nn.Module] = []
    in_ch = 1
    for i, out_ch in enumerate(widths):
        layers += [
            LayoutConv2d(in_ch, out_ch, kernel_size=3, padding=(0, 1)),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(),
        ]
        if i % 2 == 1:
            layers.append(RowMaxPool2d((2, 1)))
        in_ch = out_ch
    return ConvStack(*layers)


def cnn_output_length(window: int, n_convs: int) -> int:
    """Time steps left after the CNN: -2 per conv, halved after every second conv."""
    t = window
    for i in range(n_convs):
        t -= 2
        if t < 1:
            return 0
        if i % 2 == 1:
            t //= 2
    return t


def default_heads(token_size: int) -> int:
    """The encoder's heads by default: the largest divisor of the token size not above 5."""
    return max(h for h in range(1, 6) if token_size % h == 0)


class LSFAN(nn.Module):
    """L-SFAN and its ablations on numpy3D-style batches ``(B, channels, time)``.

    Args:
        n_channels: Signal columns S (30: 13 joint angles, 13 energies, 4 sEMG).
        window: Window length in frames (180 = 3 s at 60 Hz).
        widths: Output channels of the convolutions (K = widths[-1] tokens).
        heads: Attention heads of the encoder layer; they must divide the token size, which is
            the channel count S when pooling over time (the frames left after the CNN when
            pooling sensors). None (default): the largest divisor of the token size not above
            5, which is 5 on EmoPain's 30 columns (the published network) and works for any S.
        layers: Encoder layers.
        dim_feedforward: Hidden size of the encoder's MLP; None means the token size.
        dropout: Encoder dropout.
        attention: False drops the encoder (the 2D-CNN-TAP / -SAP ablations).
        pool: Name of the oriented pool in :mod:`poolwise.pooling`'s registry.
        pool_axis: ``"time"`` (published) or ``"sensor"`` (2D-CNN-SAP).
        pool_groups: Groups for ``ggem`` over the K x (kept axis) pooled values; None means K
            (one exponent per CNN channel).
        pool_kwargs: Extra keywords for the pool.
        n_classes: Output classes (2: non-protective, protective).
    """

    def __init__(
        self,
        *,
        n_channels: int = 30,
        window: int = WINDOW,
        widths: Sequence[int] = (2, 4, 8, 16),
        heads: int | None = None,
        layers: int = 1,
        dim_feedforward: int | None = None,
        dropout: float = 0.2,
        attention: bool = True,
        pool: str = "avg",
        pool_axis: str = "time",
        pool_groups: int | None = None,
        pool_kwargs: dict | None = None,
        n_classes: int = 2,
    ) -> None:
        super().__init__()
        if pool_axis not in POOL_AXES:
            raise ValueError(f"pool_axis={pool_axis!r} is not one of {POOL_AXES}")
        if len(widths) < 1:
            raise ValueError("widths needs at least one convolution")
        self.n_channels = n_channels
        self.window = window
        self.pool_axis = pool_axis
        self.min_window = next(t for t in range(1, 10_000) if cnn_output_length(t, len(widths)))
        if window < self.min_window:
            raise ValueError(
                f"window={window} is shorter than the {self.min_window} frames the CNN needs"
            )
        tokens = widths[-1]
        kept = n_channels if pool_axis == "time" else cnn_output_length(window, len(widths))
        self.cnn = _cnn(widths)
        self.pool = create_pool(
            pool,
            num_channels=tokens * kept,
            groups=tokens if pool_groups is None else pool_groups,
            channel_dim=1,
            **(pool_kwargs or {}),
        )
        self.encoder = None
        if attention and kept < 2:
            axis = "the channel count" if pool_axis == "time" else "the frames after the CNN"
            raise ValueError(
                f"the encoder's tokens would have {kept} feature ({axis}); its layer norm turns "
                "a one-feature token into a constant, so the model could not learn: give 2 or "
                "more channels, or use attention=False (cnn_tap)")
        if attention:
            heads = default_heads(kept) if heads is None else heads
            if not isinstance(heads, int) or heads < 1 or kept % heads != 0:
                axis = "the channel count" if pool_axis == "time" else "the frames after the CNN"
                raise ValueError(f"heads={heads!r} must be a positive divisor of the encoder's "
                                 f"token size {kept} ({axis}); heads=None picks the largest "
                                 f"divisor up to 5 ({default_heads(kept)})")
            layer = nn.TransformerEncoderLayer(
                d_model=kept,
                nhead=heads,
                dim_feedforward=dim_feedforward or kept,
                dropout=dropout,
                batch_first=True,
            )
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(tokens * kept, n_classes))

    def check_input(self, x: Tensor) -> None:
        check_batch(x, self.n_channels, self.min_window)
        if self.pool_axis == "sensor" and x.shape[2] != self.window:
            raise ValueError(
                f"pool_axis='sensor' fixes the window at {self.window} frames, got {x.shape[2]}"
            )

    def tokens(self, x: Tensor) -> Tensor:
        """(B, channels, time) -> the K tokens that enter the encoder: (B, K, kept axis)."""
        self.check_input(x)
        fmap = self.cnn(x.transpose(1, 2).unsqueeze(1))  # (B, K, T', S)
        b, k, t, s = fmap.shape
        if self.pool_axis == "time":  # pool T', keep each (channel, sensor) pair
            pooled = self.pool(fmap.transpose(2, 3).reshape(b, k * s, t))
            return pooled.view(b, k, s)
        pooled = self.pool(fmap.reshape(b, k * t, s))  # pool sensors, keep (channel, time)
        return pooled.view(b, k, t)

    def forward(self, x: Tensor) -> Tensor:
        z = self.tokens(x)
        if self.encoder is not None:
            z = self.encoder(z)
        return self.classifier(z)

    @classmethod
    def from_reference_checkpoint(cls, path: str | PathLike, **kwargs: Any) -> LSFAN:
        """Loads a state_dict released with the authors' code into the published network.

        The file is read with ``weights_only=True`` (no unpickling of code). Key layout:
        ``FrameFeatureExtractor.{i}`` -> ``cnn.{i}`` (same layer order), ``encoder.layers.*``
        as is, ``Classifier.1`` -> ``classifier.1``; the unused duplicate ``encoderlayer.*``
        is dropped. Any other missing or unexpected key raises ``ValueError``.
        """
        import pickle
        import warnings

        try:
            with warnings.catch_warnings():  # a protocol note on a file refused or read anyway
                warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
                state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ValueError(
                f"{path}: not a plain state_dict of tensors ({type(error).__name__}: "
                f"{first[:120]}); poolwise reads checkpoints without running pickled code and "
                "will not unpickle this one: re-save it as a state_dict or as safetensors"
            ) from None
        if not isinstance(state, dict):
            raise ValueError(f"{path}: holds a {type(state).__name__}, not a state_dict")
        model = cls(**kwargs)
        mapped = map_reference_state_dict(state)
        result = model.load_state_dict(mapped, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"{path}: not an L-SFAN reference checkpoint for this configuration; "
                f"missing keys {result.missing_keys}, unexpected keys {result.unexpected_keys}"
            )
        return model.eval()


_REFERENCE_PREFIXES = {
    "FrameFeatureExtractor.": "cnn.",
    "encoder.": "encoder.",
    "Classifier.": "classifier.",
}


def map_reference_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Renames the authors' state_dict keys to poolwise's :class:`LSFAN` keys."""
    mapped = {}
    for key, value in state.items():
        if key.startswith("encoderlayer."):
            continue  # registered but never called in the authors' forward
        for old, new in _REFERENCE_PREFIXES.items():
            if key.startswith(old):
                mapped[new + key[len(old) :]] = value
                break
        else:
            mapped[key] = value  # left for load_state_dict to report as unexpected
    return mapped
