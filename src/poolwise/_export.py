"""One exporter for every graph poolwise writes (detectors, pooled image models).

``onnx`` (the default) uses PyTorch's maintained exporter, ``torch.onnx.export(...,
dynamo=True)`` (it needs ``onnxscript``: ``pip install 'poolwise[onnx]'``), with a dynamic batch
axis and standard ONNX operators only. ``torchscript`` writes a traced TorchScript file; PyTorch
keeps TorchScript in maintenance mode and no longer develops it, so that format is deprecated
here too and emits a :class:`FutureWarning`: use ONNX for new deployments.

Warnings of either exporter are left visible.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from poolwise._io import atomic_path

if TYPE_CHECKING:
    import torch
    from torch import nn

EXPORT_FOLDER = "export"
MARKER = "poolwise_export"  # key of every export's sidecar JSON

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
DEPRECATED = {"torchscript": "TorchScript is in maintenance mode in PyTorch; export to ONNX "
                             "(--format onnx) for new deployments"}


def sidecar(out: Path) -> Path:
    """The JSON file beside an exported graph: ``<out>.json``."""
    return out.with_name(out.name + ".json")


def export_target(out: str | Path | None, source: Path, fmt: str) -> Path:
    """Where an export of ``source`` (a run's weights file) goes, checked before any work.

    Default: ``<source's folder>/export/<source's stem><suffix>``, a folder no reader of the
    run looks into. A given ``out`` must be a file name whose file and sidecar are absent or
    an earlier poolwise export (replaced); never a folder, the source, or another file.

    Raises:
        ValueError: naming ``out`` and what to do instead.
    """
    check_format(fmt)
    source = Path(source)
    if out is None:
        return source.parent / EXPORT_FOLDER / (source.stem + SUFFIXES[fmt])
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name, e.g. "
                         f"{out / (source.stem + SUFFIXES[fmt])}")
    for path in (out, sidecar(out)):
        if path.exists() and path.resolve() == source.resolve():
            raise ValueError(f"--out {out} would overwrite the weights being exported; give "
                             "another file name")
    if out.exists() or sidecar(out).exists():
        earlier = _is_export(sidecar(out))
        if not earlier:
            taken = out if out.exists() else sidecar(out)
            raise ValueError(f"--out {out}: {taken} exists and is not a poolwise export; give "
                             "another file name (nothing was written)")
    return out


def _is_export(path: Path) -> bool:
    import json

    try:
        return MARKER in json.loads(path.read_text())
    except (OSError, ValueError, TypeError):
        return False


def check_format(fmt: str) -> None:
    """Raises ValueError naming the formats, for one that is not in :data:`FORMATS`."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")


def export_graph(module: nn.Module, example: torch.Tensor, out: Path, fmt: str, *,
                 input_name: str, output_names: list[str],
                 metadata: dict[str, str] | None = None) -> Path:
    """Writes ``module`` (in eval mode, one tensor input whose first axis is the batch) to
    ``out`` atomically; ``metadata`` goes into the ONNX model's ``metadata_props`` or the
    TorchScript file's extra files (``<key>.json``)."""
    check_format(fmt)
    module = module.eval()
    out = Path(out)
    # the graph holds standard operators only: poolwise's native kernels are switched off
    import torch

    from poolwise.kernels import use_native

    if fmt in DEPRECATED:
        warnings.warn(DEPRECATED[fmt], FutureWarning, stacklevel=3)
    with torch.no_grad(), use_native(False), atomic_path(out) as tmp, _torch_notices_hidden():
        if fmt == "onnx":
            _onnx(module, example, tmp, input_name, output_names, metadata or {})
        else:
            traced = torch.jit.trace(module, example)
            extra = {f"{k}.json": v for k, v in (metadata or {}).items()}
            torch.jit.save(traced, str(tmp), _extra_files=extra)
    return out


@contextlib.contextmanager
def _torch_notices_hidden() -> Iterator[None]:
    """Hides what torch says while exporting that is no news to the caller: its deprecation of
    TorchScript (poolwise's own FutureWarning above says it once), its tracer's note on every
    shape check it reads as a constant (the graph has a fixed channel count and window, and
    a free batch axis; tests run exports at batches 1 and 64 against the module), and the
    exporter's notices about its own internals (``_check_is_size``, RNN weight attributes)."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", r"_check_is_size will be removed", FutureWarning)
        warnings.filterwarnings("ignore", r"The tensor attributes .*_flat_weights",
                                UserWarning)
        yield


def _onnx(module: nn.Module, example: torch.Tensor, path: Path, input_name: str,
          output_names: list[str], metadata: dict[str, str]) -> None:
    try:
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError as error:
        raise OSError("ONNX export needs onnxscript and onnx: pip install 'poolwise[onnx]'"
                      ) from error
    import torch

    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.onnx.export(
        module, (example,), input_names=[input_name], output_names=output_names,
        dynamic_shapes=({0: batch},), dynamo=True, optimize=True, verbose=False,
    )
    for key, value in metadata.items():
        program.model.metadata_props[key] = value
    program.save(str(path))
