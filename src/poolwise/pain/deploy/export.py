"""Export a detector checkpoint to ONNX (or deprecated TorchScript): raw windows in, probability
out, through :mod:`poolwise._export`.

The exported graph includes the z-score normalisation and the softmax, so a consumer feeds raw
windows ``(batch, channels, window)`` (dynamic batch axis) and gets two outputs: the
protective-class ``probability`` ``(batch,)`` (a K-class detector: every class's,
``(batch, K)``) and ``valid`` ``(batch,)`` (bool): False where a
z-score exceeds the detector's bound (:data:`~poolwise.pain.constants.MAX_ABS_Z`), the input
holds NaN/inf, or the probability is not finite. A consumer must not use a probability whose
``valid`` is False. Checkpoints that :func:`~poolwise.pain.deploy.detector.read_detector` refuses
(bad metadata, NaN weights, zero std) are refused here too. The detector config (channel
names and order, frame rate, window, hop, threshold) is written beside it as ``<file>.json``
and into the model's metadata (ONNX ``metadata_props["poolwise_detector"]``, TorchScript extra
file ``poolwise_detector.json``). PyTorch's fused transformer fast path is switched
off while exporting (it has no ONNX form); GGeM exports as plain ops. The ROCKET family's
detectors are refused: their transform is not a torch graph.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from poolwise import __version__
from poolwise._export import MARKER, export_graph, export_target, sidecar
from poolwise._io import write_text
from poolwise.pain.constants import MAX_ABS_Z
from poolwise.pain.deploy.detector import Detector, ProbabilityNet
from poolwise.pain.models import model_entry


@contextlib.contextmanager
def _no_fastpath():
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


class _CheckedNet(torch.nn.Module):
    """The exported graph: (probability, valid), see the module docstring."""

    def __init__(self, net: ProbabilityNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.forward_checked(x)


def export_detector(checkpoint: str | Path, out: str | Path | None = None, fmt: str = "onnx",
                    *, max_abs_z: float = MAX_ABS_Z) -> Path:
    """Writes ``out`` (.onnx or .pt; default ``<run>/export/<checkpoint's stem>.onnx``, see
    :func:`poolwise._export.export_target`) and ``out.json``; returns ``out``.

    Raises:
        ValueError: for a checkpoint that :func:`~poolwise.pain.deploy.detector.read_detector`
            refuses, a model without a torch graph (the ROCKET family) or an unknown format;
            nothing is written then.
    """
    out = export_target(out, Path(checkpoint), fmt)
    detector = Detector.load(checkpoint, max_abs_z=max_abs_z)
    config = detector.config
    if model_entry(config.model).closed_form:
        raise ValueError(
            f"{checkpoint}: a {config.model} detector cannot be exported to {fmt}: its "
            "random-kernel transform runs in aeon (numba), not in a torch graph. Score its "
            "windows in Python instead: `poolwise pain stream`, or "
            "poolwise.pain.deploy.detector.Detector.load(...).predict_proba")
    wrapper = _CheckedNet(detector.net).eval()
    example = torch.zeros(2, len(config.channel_names), config.window)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _no_fastpath():
        export_graph(wrapper, example, out, fmt, input_name="windows",
                     output_names=["probability", "valid"],
                     metadata={"poolwise_detector": config.to_json()})
    info = {MARKER: __version__, **json.loads(config.to_json()), "max_abs_z": max_abs_z,
            "outputs": {"probability": (
                "P(protective) per window, (batch,)" if config.n_classes == 2 else
                f"P(class) per window and class, (batch, {config.n_classes}), columns in "
                f"the order of class_names"),
                "valid": "False: do not use that probability (|z| > max_abs_z, "
                         "NaN/inf input or a non-finite output)"}}
    write_text(sidecar(out), json.dumps(info, indent=1, sort_keys=True) + "\n")
    return out

