"""Export a detector checkpoint to ONNX or TorchScript: raw windows in, probability out.

The exported graph includes the z-score normalisation and the softmax, so a consumer feeds raw
windows ``(batch, channels, window)`` (dynamic batch axis) and gets the protective-class
probability ``(batch,)``. The detector config (channel names and order, frame rate, window,
hop, threshold) is written beside it as ``<file>.json`` and, for ONNX, also into the model's
metadata. PyTorch's fused transformer fast path is switched off while exporting (it has no
ONNX form); GGeM exports as plain ops.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import torch

from poolwise._io import atomic_path, write_text
from poolwise.pain.detector import Detector

FORMATS = ("onnx", "torchscript")


@contextlib.contextmanager
def _no_fastpath():
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def export_detector(checkpoint: str | Path, out: str | Path, fmt: str = "onnx") -> Path:
    """Writes ``out`` (.onnx or .pt) and ``out.json``; returns ``out``."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    detector = Detector.load(checkpoint)
    wrapper = detector.net
    config = detector.config
    example = torch.zeros(2, len(config.channel_names), config.window)
    out = Path(out)
    with _no_fastpath(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with atomic_path(out) as tmp:
            if fmt == "onnx":
                torch.onnx.export(
                    wrapper, (example,), str(tmp), input_names=["windows"],
                    output_names=["probability"], dynamic_axes={"windows": {0: "batch"},
                                                                "probability": {0: "batch"}},
                    dynamo=False, opset_version=17,
                )
                _add_onnx_metadata(tmp, config.to_json())
            else:
                traced = torch.jit.trace(wrapper, example)
                torch.jit.save(traced, str(tmp), _extra_files={"poolwise_detector.json":
                                                               config.to_json()})
    write_text(out.with_name(out.name + ".json"), json.dumps(json.loads(config.to_json()),
                                                             indent=1) + "\n")
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
