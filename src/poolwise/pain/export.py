"""Export a detector checkpoint to ONNX or TorchScript: raw windows in, probability out.

The exported graph includes the z-score normalisation and the softmax, so a consumer feeds raw
windows ``(batch, channels, window)`` (dynamic batch axis) and gets two outputs: the
protective-class ``probability`` ``(batch,)`` and ``valid`` ``(batch,)`` (bool): False where a
z-score exceeds the detector's bound (:data:`~poolwise.pain.constants.MAX_ABS_Z`), the input
holds NaN/inf, or the probability is not finite. A consumer must not use a probability whose
``valid`` is False. Checkpoints that :func:`~poolwise.pain.detector.read_detector` refuses
(bad metadata, NaN weights, zero std) are refused here too. The detector config (channel
names and order, frame rate, window, hop, threshold) is written beside it as ``<file>.json``
and, for ONNX, also into the model's metadata. PyTorch's fused transformer fast path is switched
off while exporting (it has no ONNX form); GGeM exports as plain ops.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import torch

from poolwise._io import atomic_path, write_text
from poolwise.pain.constants import MAX_ABS_Z
from poolwise.pain.detector import Detector, ProbabilityNet

FORMATS = ("onnx", "torchscript")


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


def export_detector(checkpoint: str | Path, out: str | Path, fmt: str = "onnx", *,
                    max_abs_z: float = MAX_ABS_Z) -> Path:
    """Writes ``out`` (.onnx or .pt) and ``out.json``; returns ``out``.

    Raises:
        ValueError: for a checkpoint that :func:`~poolwise.pain.detector.read_detector`
            refuses, or an unknown format; nothing is written then.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    detector = Detector.load(checkpoint, max_abs_z=max_abs_z)
    wrapper = _CheckedNet(detector.net).eval()
    config = detector.config
    example = torch.zeros(2, len(config.channel_names), config.window)
    out = Path(out)
    with _no_fastpath(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with atomic_path(out) as tmp:
            if fmt == "onnx":
                torch.onnx.export(
                    wrapper, (example,), str(tmp), input_names=["windows"],
                    output_names=["probability", "valid"],
                    dynamic_axes={"windows": {0: "batch"}, "probability": {0: "batch"},
                                  "valid": {0: "batch"}},
                    dynamo=False, opset_version=17,
                )
                _add_onnx_metadata(tmp, config.to_json())
            else:
                traced = torch.jit.trace(wrapper, example)
                torch.jit.save(traced, str(tmp), _extra_files={"poolwise_detector.json":
                                                               config.to_json()})
    sidecar = {**json.loads(config.to_json()), "max_abs_z": max_abs_z,
               "outputs": {"probability": "P(protective) per window",
                           "valid": "False: do not use that probability (|z| > max_abs_z, "
                                    "NaN/inf input or a non-finite output)"}}
    write_text(out.with_name(out.name + ".json"), json.dumps(sidecar, indent=1,
                                                             sort_keys=True) + "\n")
    return out


def _add_onnx_metadata(path: Path, text: str) -> None:
    try:
        import onnx
    except ImportError:  # the sidecar JSON still carries the config
        return
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "poolwise_detector", text
    onnx.save(model, str(path))
