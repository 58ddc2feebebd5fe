"""Export a trained pooled timm model (a ``poolwise vision train`` run) to ONNX (or deprecated
TorchScript) through :mod:`poolwise._export`.

The graph takes normalised images ``(batch, channels, height, width)`` with a dynamic batch
axis and returns class probabilities ``(batch, classes)``, or with ``embedding=True`` the
pooled embedding ``forward_head(pre_logits=True)``. GGeM is exported as plain ops (clamp, max,
pow, mean), so any ONNX runtime runs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from poolwise import __version__
from poolwise._export import MARKER, export_graph, export_target, sidecar
from poolwise._io import read_json, write_text
from poolwise.vision.train.classification import load_trained
from poolwise.vision.train.inputs import load_splits


class _Probabilities(nn.Module):
    def __init__(self, model: nn.Module, embedding: bool) -> None:
        super().__init__()
        self.model, self.embedding = model, embedding

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.model.forward_features(images)
        if self.embedding:
            return self.model.forward_head(features, pre_logits=True)
        return torch.softmax(self.model.forward_head(features), dim=-1)


def export_run(run_dir: str | Path, out: str | Path | None = None, fmt: str = "onnx", *,
               embedding: bool = False) -> Path:
    """Writes ``out`` (default ``<run>/export/model.onnx``; see
    :func:`poolwise._export.export_target`) and ``out.json`` (the run's spec, input shape and
    class names); returns ``out``."""
    out = export_target(out, Path(run_dir) / "model.safetensors", fmt)
    model, spec = load_trained(run_dir)
    result = read_json(Path(run_dir) / "result.json", "run result")
    train, _ = load_splits(spec)
    channels, size = train.channels, train.image_size
    example = torch.zeros(2, channels, size, size)
    wrapper = _Probabilities(model, embedding).eval()
    name = "embedding" if embedding else "probabilities"
    out.parent.mkdir(parents=True, exist_ok=True)
    out = export_graph(wrapper, example, out, fmt, input_name="images", output_names=[name])
    info = {MARKER: __version__, "spec": spec.to_json(), "input": ["batch", channels, size, size],
            "output": "embedding" if embedding else "probabilities",
            "classes": result.get("classes"), "p": model.p_values()}
    write_text(sidecar(out), json.dumps(info, indent=1) + "\n")
    return out
