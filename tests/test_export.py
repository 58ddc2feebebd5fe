"""Where an export goes (poolwise._export.export_target): never over a run's own files."""

import json

import pytest

from poolwise._export import MARKER, export_target


def test_the_default_is_the_runs_export_folder(tmp_path):
    source = tmp_path / "fold_C01.safetensors"
    assert export_target(None, source, "onnx") == tmp_path / "export" / "fold_C01.onnx"
    assert export_target(None, source, "torchscript") == tmp_path / "export" / "fold_C01.pt"
    with pytest.raises(ValueError, match="format 'tflite' is not one of onnx, torchscript"):
        export_target(None, source, "tflite")


def test_an_out_that_collides_is_refused_and_an_earlier_export_replaced(tmp_path):
    source = tmp_path / "model.safetensors"
    source.write_bytes(b"weights")
    (tmp_path / "result.json").write_text("{}")
    with pytest.raises(ValueError, match=r"is a folder; give a file name, e.g. .*model\.onnx"):
        export_target(tmp_path, source, "onnx")
    with pytest.raises(ValueError, match="would overwrite the weights being exported"):
        export_target(source, source, "onnx")
    with pytest.raises(ValueError, match=r"result\.json exists and is not a poolwise export"):
        export_target(tmp_path / "result.json", source, "onnx")
    with pytest.raises(ValueError, match=r"result\.json exists and is not a poolwise export"):
        export_target(tmp_path / "result", source, "onnx")  # its sidecar would be result.json
    (tmp_path / "old.onnx").write_bytes(b"graph")
    (tmp_path / "old.onnx.json").write_text(json.dumps({MARKER: "0.1"}))
    assert export_target(tmp_path / "old.onnx", source, "onnx") == tmp_path / "old.onnx"
    assert export_target(tmp_path / "new.onnx", source, "onnx") == tmp_path / "new.onnx"
