"""Streaming detection: frames in as they arrive, one probability per hop.

:class:`StreamingDetector` keeps the last ``window`` frames in a ring buffer and, whenever a
window on the hop grid completes (windows start at frames 0, hop, 2 hop, ... of the stream, as
in offline windowing), runs the detector on it. It accepts any chunk size.

Missing data policy (never a crash, never a silent wrong answer):

- NaN or inf values are missing values; a sensor that drops out sends NaN on its channels.
- Gaps in time: with ``timestamps``, a jump longer than 1.5 frame periods inserts the missing
  frames as NaN, so frame numbers stay true to time. A gap of a whole window or more empties the
  buffer: the detector warms up again (no decision until a full window of new frames).
- A window with a z-score (after the checkpoint's normalisation) beyond the detector's
  ``max_abs_z`` (:data:`~poolwise.pain.constants.MAX_ABS_Z`, 100 by default) is far outside the
  training data: its decision is unavailable with ``status="out-of-range"`` and the channels
  named; a model output that is not a finite probability gives ``status="unavailable"``. Neither
  ever carries a label.
- At each hop, a channel with more than ``max_missing`` (default 10 %) of its window missing
  makes the decision *unavailable*: ``probability`` is None, ``status`` is ``"missing"`` and
  ``detail`` names the channels. Otherwise the missing values are linearly interpolated in time
  (nearest value at the edges) and the decision has ``status="filled"`` with the count, so a
  caller can tell it from a clean ``"ok"`` one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from poolwise.pain.deploy.detector import Detector


@dataclass(frozen=True)
class Decision:
    start: int  # first frame of the window
    end: int  # one past its last frame
    time_s: float  # end / frame rate: when the decision could be made
    probability: float | None
    label: int | None  # 1 = protective, by the checkpoint's threshold
    status: str  # "ok", "filled"; no probability: "missing", "out-of-range", "unavailable"
    detail: str = ""


class StreamingDetector:
    """Feed frames ``(n, channels)`` with :meth:`push`; get :class:`Decision` s back."""

    def __init__(self, detector: Detector, *, max_missing: float = 0.1) -> None:
        if not 0.0 <= max_missing < 1.0:
            raise ValueError(f"max_missing must be in [0, 1), got {max_missing}")
        if detector.config.n_classes != 2:
            raise ValueError(
                f"streaming decisions are protective / not protective; this detector has "
                f"{detector.config.n_classes} classes ({', '.join(detector.class_names)}): score "
                "its windows with Detector.predict_proba")
        self.detector = detector
        self.max_missing = max_missing
        c = detector.config
        self.window, self.hop, self.rate = c.window, c.hop, c.frame_rate
        self.channels = len(c.channel_names)
        self.buffer = np.full((self.window, self.channels), np.nan, dtype=np.float32)
        self.frames = 0  # frames seen, gaps included: the next frame's index
        self.filled = 0  # consecutive frames in the buffer since the last reset
        self.last_time: float | None = None

    def reset(self) -> None:
        self.buffer[:] = np.nan
        self.filled = 0

    def push(self, frames: np.ndarray, timestamps: np.ndarray | None = None) -> list[Decision]:
        """Adds frames (``(n, channels)``, or one frame ``(channels,)``) and returns the
        decisions of the windows they completed."""
        frames = np.asarray(frames, dtype=np.float32)
        if frames.ndim == 1:
            frames = frames[None]
        if frames.ndim != 2 or frames.shape[1] != self.channels:
            raise ValueError(f"frames must be (n, {self.channels}), got shape {frames.shape}")
        if timestamps is None:
            return self._write(frames)
        timestamps = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        if len(timestamps) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(timestamps)} timestamps")
        decisions: list[Decision] = []
        period = 1.0 / self.rate
        start = 0
        for i, t in enumerate(timestamps):
            if self.last_time is not None:
                step = t - self.last_time
                if step <= 0:
                    raise ValueError(f"timestamps must increase: {t} after {self.last_time}")
                if step > 1.5 * period:
                    decisions += self._write(frames[start:i])
                    start = i
                    decisions += self._gap(int(np.rint(step / period)) - 1)
            self.last_time = float(t)
        return decisions + self._write(frames[start:])

    def _gap(self, missing: int) -> list[Decision]:
        if missing >= self.window:
            self.frames += missing
            self.reset()
            return []
        return self._write(np.full((missing, self.channels), np.nan, dtype=np.float32))

    def _write(self, frames: np.ndarray) -> list[Decision]:
        decisions = []
        i = 0
        while i < len(frames):
            # frames until the next window end on the grid (ends at window + k * hop)
            if self.frames < self.window:
                to_next = self.window - self.frames
            else:
                to_next = (-(self.frames - self.window)) % self.hop or self.hop
            k = min(len(frames) - i, to_next)
            pos = self.frames % self.window  # ring write: one slice, or two at the wrap
            first = min(k, self.window - pos)
            self.buffer[pos:pos + first] = frames[i:i + first]
            if k > first:
                self.buffer[: k - first] = frames[i + first:i + k]
            self.frames += k
            self.filled += k
            i += k
            if self.frames >= self.window and (self.frames - self.window) % self.hop == 0 \
                    and self.filled >= self.window:
                decisions.append(self._decide())
        return decisions

    def current_window(self) -> np.ndarray:
        """The last ``window`` frames in time order, ``(channels, window)``."""
        pos = self.frames % self.window
        return np.concatenate([self.buffer[pos:], self.buffer[:pos]]).T

    def _decide(self) -> Decision:
        window = self.current_window()
        start, end = self.frames - self.window, self.frames
        missing = ~np.isfinite(window)
        status, detail = "ok", ""
        if missing.any():
            fraction = missing.mean(axis=1)
            names = self.detector.config.channel_names
            bad = [f"{names[c]} ({100 * fraction[c]:.0f}%)" for c in
                   np.flatnonzero(fraction > self.max_missing)]
            if bad:
                return Decision(start, end, end / self.rate, None, None, "missing",
                                f"missing beyond {100 * self.max_missing:.0f}%: "
                                + ", ".join(bad))
            window = _interpolate(window, missing)
            status, detail = "filled", f"{int(missing.sum())} values interpolated"
        with torch.inference_mode():
            prob, valid = self.detector.net.forward_checked(torch.from_numpy(window[None]))
        p = float(prob[0])
        if not bool(valid[0]):
            return Decision(start, end, end / self.rate, None, None, *self._why_not(window, p))
        return Decision(start, end, end / self.rate, p, int(p >= self.detector.threshold),
                        status, detail)

    def _why_not(self, window: np.ndarray, p: float) -> tuple[str, str]:
        """Status and detail of a window the detector refused to score."""
        net, names = self.detector.net, self.detector.config.channel_names
        z = np.abs((window - net.mean[0].numpy()) / net.std[0].numpy())
        if (z > net.max_abs_z).any():
            worst = z.max(axis=1)
            bad = [f"{names[c]} (|z| {worst[c]:.3g})" for c in np.argsort(-worst)
                   if worst[c] > net.max_abs_z]
            return "out-of-range", (f"|z| beyond {net.max_abs_z:g}: " + ", ".join(bad[:4])
                                    + (f" and {len(bad) - 4} more" if len(bad) > 4 else ""))
        return "unavailable", f"the model output is not a probability ({p})"


def _interpolate(window: np.ndarray, missing: np.ndarray) -> np.ndarray:
    window = window.copy()
    t = np.arange(window.shape[1])
    for c in np.flatnonzero(missing.any(axis=1)):
        ok = ~missing[c]
        window[c, ~ok] = np.interp(t[~ok], t[ok], window[c, ok])
    return window


def frame_labels(decisions: list[Decision], n_frames: int,
                 threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame probability (mean over the available windows covering the frame; NaN where
    none) and label (1 protective, 0 not, -1 unknown) from overlapping window decisions."""
    total = np.zeros(n_frames)
    count = np.zeros(n_frames)
    for d in decisions:
        if d.probability is not None:
            total[d.start:min(d.end, n_frames)] += d.probability
            count[d.start:min(d.end, n_frames)] += 1
    prob = np.full(n_frames, np.nan)
    covered = count > 0
    prob[covered] = total[covered] / count[covered]
    labels = np.full(n_frames, -1, dtype=np.int8)
    labels[covered] = (prob[covered] >= threshold).astype(np.int8)
    return prob, labels
