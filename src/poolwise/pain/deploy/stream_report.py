"""What a stream of decisions leaves behind for a person to look at: CSV tables and a plot."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from poolwise._figures import figure, save_figure
from poolwise._io import write_text
from poolwise.pain.deploy.detector import DetectorConfig
from poolwise.pain.deploy.streaming import Decision, frame_labels


def write_stream_outputs(out: Path, decisions: list[Decision], n_frames: int,
                         config: DetectorConfig) -> None:
    """``decisions.csv`` (one row per window decision), ``frames.csv`` (each frame's probability
    and label, :func:`~poolwise.pain.deploy.streaming.frame_labels`) and ``stream.png`` / ``.svg``
    (probabilities over time, the threshold, the frames labelled protective or unknown)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["time_s", "start", "end", "probability", "label", "status", "detail"])
    for d in decisions:
        writer.writerow([f"{d.time_s:.4f}", d.start, d.end,
                         "" if d.probability is None else f"{d.probability:.6f}",
                         "" if d.label is None else d.label, d.status, d.detail])
    write_text(out / "decisions.csv", buffer.getvalue())
    prob, labels = frame_labels(decisions, n_frames, config.threshold)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["frame", "time_s", "probability", "label"])
    for i in range(n_frames):
        writer.writerow([i, f"{i / config.frame_rate:.4f}",
                         "" if prob[i] != prob[i] else f"{prob[i]:.6f}", int(labels[i])])
    write_text(out / "frames.csv", buffer.getvalue())
    fig = figure((10, 3))
    ax = fig.subplots()
    t = [d.time_s for d in decisions if d.probability is not None]
    ax.plot(t, [d.probability for d in decisions if d.probability is not None], ".-", ms=3,
            label="window probability (at its end)")
    ax.axhline(config.threshold, color="grey", ls="--", lw=0.8, label="threshold")
    frames_t = [i / config.frame_rate for i in range(n_frames)]
    ax.fill_between(frames_t, 0, 1, where=labels == 1, color="C3", alpha=0.15, step="post",
                    label="shading: frames predicted protective")
    ax.fill_between(frames_t, 0, 1, where=labels == -1, color="k", alpha=0.07, step="post",
                    label="shading: no decision (unknown)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("P(protective)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    save_figure(fig, out / "stream.png", dpi=110)
