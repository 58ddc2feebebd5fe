"""Detector checkpoints: metadata round trip, input checks, thresholds, ONNX/TorchScript export."""

import numpy as np
import pytest
import torch

from poolwise.cli import main
from poolwise.pain.deploy.detector import (
    Detector,
    DetectorConfig,
    choose_threshold,
    read_detector,
    save_detector,
)
from poolwise.pain.deploy.export import export_detector
from poolwise.pain.models import create_model, list_models, model_entry, model_input_kwargs

CHANNELS = tuple(f"col{i}" for i in range(30))


def make_detector(tmp_path, name="lsfan", threshold=0.4, window=180):
    torch.manual_seed(0)
    kwargs = model_input_kwargs(name, 30, window)
    model = create_model(name, **kwargs)
    config = DetectorConfig(
        model=name, model_kwargs=kwargs, channel_names=CHANNELS, frame_rate=60.0, window=window,
        hop=45, mean=np.linspace(-1, 1, 30).tolist(), std=np.linspace(0.5, 2, 30).tolist(),
        threshold=threshold)
    path = save_detector(tmp_path / f"{name}.safetensors", config, model.state_dict())
    return path, model


def windows(n, seed=0, window=180):
    return np.random.default_rng(seed).normal(1.0, 2.0, (n, 30, window)).astype(np.float32)


def test_choose_threshold_by_hand():
    y = np.array([0, 0, 1, 1, 0])
    prob = np.array([0.1, 0.3, 0.35, 0.8, 0.6])
    # t = 0.35 classifies [0, 0, 1, 1, 1]: F1+ = 0.8, F1- = 0.8 -> the only perfect-ish cut
    assert choose_threshold(y, prob) == pytest.approx(0.35)
    assert choose_threshold(np.zeros(4), np.array([0.1, 0.9, 0.2, 0.3])) == 0.5


def test_round_trip_and_normalisation(tmp_path):
    path, model = make_detector(tmp_path)
    config, state = read_detector(path)
    assert config.channel_names == CHANNELS and config.hop == 45 and config.threshold == 0.4
    assert state.keys() == model.state_dict().keys()
    detector = Detector.load(path)
    X = windows(8)
    mean = np.linspace(-1, 1, 30, dtype=np.float32)[None, :, None]
    std = np.linspace(0.5, 2, 30, dtype=np.float32)[None, :, None]
    with torch.no_grad():
        expected = torch.softmax(model.eval()(torch.from_numpy((X - mean) / std)), 1)[:, 1]
    np.testing.assert_allclose(detector.predict_proba(X), expected.numpy(), atol=1e-6)
    assert detector.predict(X).tolist() == (expected.numpy() >= 0.4).astype(int).tolist()


def test_input_checks_say_what_differs(tmp_path):
    detector = Detector.load(make_detector(tmp_path)[0])
    with pytest.raises(ValueError, match="input has 29 channels, the detector expects 30"):
        detector.predict_proba(windows(2)[:, :29])
    names = list(CHANNELS)
    names[4], names[5] = names[5], names[4]
    with pytest.raises(ValueError, match="channel 4 is 'col5', the detector expects 'col4'"):
        detector.predict_proba(windows(2), channel_names=names)
    with pytest.raises(ValueError, match="sampled at 50 Hz, the detector expects 60 Hz"):
        detector.predict_proba(windows(2), frame_rate=50.0)
    with pytest.raises(ValueError, match="windows have 90 frames, the detector expects 180"):
        detector.predict_proba(windows(2)[:, :, :90])
    X = windows(2)
    X[1, 3, 7] = np.nan
    with pytest.raises(ValueError, match="1 input values are NaN"):
        detector.predict_proba(X)


def test_files_that_are_not_detectors(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match=r"plain\.safetensors: no detector metadata"):
        read_detector(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file format")
    with pytest.raises(ValueError, match=r"junk\.safetensors: not a readable safetensors file"):
        read_detector(tmp_path / "junk.safetensors")


WINDOW = 30


@pytest.mark.parametrize("name", [n for n in list_models() if not model_entry(n).closed_form])
def test_onnx_and_torchscript_match_pytorch(tmp_path, name):
    ort = pytest.importorskip("onnxruntime")
    # half-second windows: the exporters unroll the recurrent nets over time (180 frames take
    # half a minute per net); the operators checked are the same at any window length
    path, _ = make_detector(tmp_path, name, window=WINDOW)
    reference = Detector.load(path).predict_proba(windows(64, seed=1, window=WINDOW))
    onnx_path = export_detector(path, tmp_path / f"{name}.onnx", "onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with pytest.warns(FutureWarning, match="TorchScript is in maintenance mode"):
        script = torch.jit.load(str(export_detector(path, tmp_path / f"{name}.pt",
                                                    "torchscript")))
    for batch in (1, 64):
        X = windows(64, seed=1, window=WINDOW)[:batch]
        got, valid = session.run(None, {"windows": X})
        np.testing.assert_allclose(got, reference[:batch], atol=1e-5)
        assert valid.dtype == bool and valid.all()
        prob, valid = script(torch.from_numpy(X))
        np.testing.assert_allclose(prob.detach().numpy(), reference[:batch], atol=1e-5)
        assert valid.all()
    meta = {p.key: p.value for p in __import__("onnx").load(str(onnx_path)).metadata_props}
    assert '"hop": 45' in meta["poolwise_detector"]
    assert (tmp_path / f"{name}.onnx.json").is_file()


def test_export_cli(tmp_path, capsys):
    path, _ = make_detector(tmp_path, "cnn_tap")
    with pytest.warns(FutureWarning, match="TorchScript"):
        assert main(["pain", "export", str(path), "--format", "torchscript"]) == 0
    assert (tmp_path / "export" / "cnn_tap.pt").is_file() and "wrote" in capsys.readouterr().out
    with pytest.warns(FutureWarning, match="TorchScript"):  # an earlier export is replaced
        assert main(["pain", "export", str(path), "--format", "torchscript"]) == 0
    assert main(["pain", "export", str(path), "--out", str(path)]) == 2
    assert "would overwrite the weights being exported" in capsys.readouterr().err
    assert main(["pain", "export", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors does not exist" in capsys.readouterr().err
