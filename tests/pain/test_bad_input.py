"""Bad input, case by case: each is a clear error that names the file, column, value or option
at fault (or, for what a reader leaves out by design, a record of it): never a silent answer."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from poolwise._io import save_safetensors
from poolwise.cli import main
from poolwise.pain.data.dataset import WindowDataset
from poolwise.pain.data.layout import CHANNEL_NAMES, FameLayout
from poolwise.pain.data.readers import (
    DataError,
    read_challenge_folder,
    read_fame_folder,
    read_fame_session,
)
from poolwise.pain.deploy.detector import (
    FORMAT,
    Detector,
    DetectorConfig,
    save_detector,
)
from poolwise.pain.deploy.export import export_detector
from poolwise.pain.deploy.streaming import StreamingDetector
from poolwise.pain.models import LSFAN, create_model

LAYOUT = FameLayout()
BEND = LAYOUT.exercise_start + LAYOUT.exercises.index("bend")
WALK = LAYOUT.exercise_start + LAYOUT.exercises.index("walking")


def fame(frames=400, bend=(0, 400)):
    """A valid raw FAME matrix: one 'bend' segment, signals non-zero from the first row."""
    m = np.zeros((frames, LAYOUT.n_columns))
    m[:, list(LAYOUT.signals)] = np.random.default_rng(0).normal(1.0, 0.3, (frames, 30))
    m[bend[0]:bend[1], BEND] = 1
    return m


def save_mat(path, matrix):
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"data": matrix})
    return path


def challenge(frames=400):
    m = np.zeros((frames, 31))
    m[:, :30] = np.random.default_rng(1).normal(size=(frames, 30))
    m[frames // 2:, 30] = 1
    return m


# --- readers -------------------------------------------------------------------------------


def test_excluded_exercises_and_short_segments_are_recorded(tmp_path):
    m = fame(900, bend=(0, 400))
    m[400:700, WALK] = 1  # excluded by design
    m[750:850, BEND] = 1  # 100 frames: shorter than a window
    ds = read_fame_session(save_mat(tmp_path / "P01_1.mat", m))
    assert len(ds) == 5  # windows at 0, 45, ..., 180 of the first segment
    reasons = {e["reason"]: e["frames"] for e in ds.skipped}
    assert reasons == {"excluded exercise: walking": 300,
                       "segment shorter than a window (180 frames): bend": 100}
    assert all(e["file"].endswith("P01_1.mat") for e in ds.skipped)
    back = WindowDataset.load(ds.save(tmp_path / "w.npz"))
    assert back.skipped == ds.skipped  # the record travels with the windows


def test_a_session_shorter_than_a_window_is_reported_not_dropped(tmp_path, capsys):
    save_mat(tmp_path / "randomised P" / "P01_1.mat", fame(400))
    short_file = save_mat(tmp_path / "randomised P" / "P02_1.mat", fame(150, bend=(0, 150)))
    ds = read_fame_folder(tmp_path)
    assert ds.subjects == ["P01"]
    (short,) = [e for e in ds.skipped if "P02_1.mat" in e["file"]]
    assert short["reason"].startswith("no full window") and short["frames"] == 150
    assert short["whole_file"]
    assert main(["pain", "windows", str(tmp_path), "--out", str(tmp_path / "w.npz")]) == 0
    printed = capsys.readouterr().out
    assert f"skipped {short_file}: no full window" in printed
    assert "| no full window | 150 |" in printed


def test_no_window_anywhere_is_an_error_naming_the_files(tmp_path):
    save_mat(tmp_path / "randomised C" / "C01_1.mat", fame(150, bend=(0, 150)))
    with pytest.raises(DataError, match=r"no windows in any session \(C01_1\.mat: no full "
                       r"window.*check --window"):
        read_fame_folder(tmp_path)
    with pytest.raises(DataError, match=r"no windows in any session"):
        read_fame_folder(save_mat(tmp_path / "b" / "randomised C" / "C02.mat",
                                  fame(400)).parents[1], window=500)


@pytest.mark.parametrize("window,step,bad", [(0, 45, "window"), (180, 0, "step"),
                                             (-5, 45, "window"), (180, 2.5, "step")])
def test_window_and_step_are_validated(tmp_path, window, step, bad):
    path = save_mat(tmp_path / "P01.mat", fame())
    with pytest.raises(DataError, match=rf"{bad} must be a positive number of frames"):
        read_fame_session(path, window=window, step=step)


def test_one_subject_in_two_groups_names_both_files(tmp_path):
    a = save_mat(tmp_path / "randomised C" / "X01_1.mat", fame())
    b = save_mat(tmp_path / "randomised P" / "X01_2.mat", fame())
    with pytest.raises(DataError, match=rf"subject X01 appears in {a} and in {b}"):
        read_fame_folder(tmp_path)


def test_two_challenge_files_of_one_subject_name_both(tmp_path):
    np.savetxt(tmp_path / "S01.csv", challenge(), delimiter=",")
    save_mat(tmp_path / "S01.mat", challenge())
    with pytest.raises(DataError, match=r"subject S01 appears in .*S01\.csv and in .*S01\.mat"):
        read_challenge_folder(tmp_path)


def test_challenge_header_detection_never_eats_a_data_row(tmp_path):
    m = challenge()
    m[0, 3] = np.inf  # a first data row that holds letters ('inf') but is data
    path = tmp_path / "S02.csv"
    np.savetxt(path, m, delimiter=",")
    with pytest.raises(DataError, match=r"S02\.csv: NaN/Inf in column 3 \(angle_03\) at frame 0"):
        read_challenge_folder(tmp_path)
    header = ",".join([*CHANNEL_NAMES, "label"])
    np.savetxt(path, challenge(), delimiter=",", header=header, comments="")
    assert len(read_challenge_folder(tmp_path)) == 5  # 400 frames: windows at 0 .. 180
    np.savetxt(path, challenge(), delimiter=",", header="a,b,c", comments="")
    with pytest.raises(DataError, match=r"S02\.csv: the header has 3 columns, expected 31"):
        read_challenge_folder(tmp_path)


def test_short_challenge_files_are_recorded_and_all_short_is_an_error(tmp_path):
    np.savetxt(tmp_path / "S01.csv", challenge(400), delimiter=",")
    np.savetxt(tmp_path / "S02.csv", challenge(100), delimiter=",")
    ds = read_challenge_folder(tmp_path)
    assert ds.subjects == ["S01"]
    assert [e["reason"] for e in ds.skipped] == [
        "recording shorter than a window: 100 frames < 180"]
    with pytest.raises(DataError, match=r"no windows in any file \(S01\.csv: recording "
                       r"shorter than a window: 400 frames < 500"):
        read_challenge_folder(tmp_path, window=500)


def test_transposed_matrices_are_named(tmp_path):
    save_mat(tmp_path / "S03.mat", challenge(200).T)
    with pytest.raises(DataError, match=r"S03\.mat: expected 31 columns .* got 200 \(the "
                       r"matrix looks transposed"):
        read_challenge_folder(tmp_path)
    with pytest.raises(DataError, match=r"P01\.mat: .*looks transposed"):
        read_fame_session(save_mat(tmp_path / "P01.mat", fame(400).T))


def test_truncated_v73_mat_names_the_file(tmp_path):
    path = tmp_path / "P01_1.mat"
    with h5py.File(path, "w") as f:
        f["x"] = fame().T
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(DataError, match=r"P01_1\.mat: unreadable MATLAB v7\.3 \(HDF5\) file"):
        read_fame_session(path)


def _window_file(tmp_path, **change):
    rng = np.random.default_rng(0)
    arrays = {"X": rng.normal(size=(6, 30, 180)).astype(np.float32),
              "y": np.array([0, 1, 0, 1, 0, 1]), "subject": np.array(["A", "A", "B", "B", "C",
                                                                      "C"]),
              "group": np.array(["CLBP"] * 6), "exercise": np.array(["bend"] * 6),
              "channel_names": np.array(CHANNEL_NAMES), "frame_rate": np.array(60.0),
              "step": np.array(45)}
    arrays.update(change)
    path = tmp_path / "w.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("change,match", [
    ({"y": np.array([0, 2, 0, 1, 0, 1])}, r"label 2 of window 1 is not 0 \(not protective\) or 1"),
    ({"y": np.array([0, 0.7, 0, 1, 0, 1])}, r"label 0\.7 of window 1 is not a class label"),
    ({"X": np.where(np.arange(180) == 17, np.nan, 1.0).astype(np.float32)
      * np.ones((6, 30, 1), np.float32)}, r"NaN/inf values \(first: window 0, channel "
                                          r"angle_00, frame 17\)"),
    ({"group": np.array(["CLBP", "healthy", "CLBP", "CLBP", "CLBP", "CLBP"])},
     r"subject\(s\) A appear in more than one group"),
    ({"step": np.array(0)}, r"step must be a positive number of frames"),
    ({"channel_names": np.array(["a"] * 30)}, r"channel names must be unique; repeated: a"),
    ({"subject": np.array(["A", "A", "B", "B", "C", "C"], dtype=object)},
     r"Python objects, which poolwise never unpickles"),
])
def test_bad_window_files_name_file_and_value(tmp_path, change, match):
    path = _window_file(tmp_path, **change)
    with pytest.raises(ValueError, match=rf"w\.npz: .*{match}"):
        WindowDataset.load(path)


def test_text_or_truncated_window_files_are_named(tmp_path):
    text = tmp_path / "w.npz"
    text.write_text("subject,label\nP01,1\n")
    with pytest.raises(ValueError, match=r"w\.npz: not a poolwise window file.*pain windows"):
        WindowDataset.load(text)
    good = _window_file(tmp_path)
    good.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(ValueError, match=r"w\.npz: "):
        WindowDataset.load(good)


def test_labels_that_are_not_classes_fail_before_any_training(tmp_path, capsys):
    path = _window_file(tmp_path, y=np.array([0, 2, 0, 1, 0, 1]))
    assert main(["pain", "loso", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "label 2 of window 1 is not 0 (not protective) or 1" in err
    assert not (tmp_path / "run").exists()


# --- detector checkpoints, export ------------------------------------------------------------


def _config(**change):
    fields = dict(model="cnn_tap", model_kwargs={}, channel_names=list(CHANNEL_NAMES),
                  frame_rate=60.0, window=180, hop=45, mean=[0.0] * 30, std=[1.0] * 30,
                  threshold=0.5, provenance={})
    fields.update(change)
    return fields


def _checkpoint(tmp_path, metadata=None, state=None, **change):
    torch.manual_seed(0)
    state = state if state is not None else create_model("cnn_tap").state_dict()
    text = metadata if metadata is not None else json.dumps(_config(**change))
    return save_safetensors(tmp_path / "fold_X.safetensors", state,
                            {"format": FORMAT, "poolwise_detector": text})


nan_weights = {k: (v * np.nan if k == "classifier.1.weight" else v)
               for k, v in create_model("cnn_tap").state_dict().items()}

BAD_CHECKPOINTS = [
    ({"std": [1.0] * 29 + [0.0]}, r"std must be finite and > 0; it is not for channel\(s\) "
                                  r"emg_3"),
    ({"std": [float("nan")] + [1.0] * 29}, r"std must be finite and > 0.*angle_00"),
    ({"mean": [float("inf")] + [0.0] * 29}, r"mean is not finite for channel\(s\) angle_00"),
    ({"model": "resnet"}, r"model 'resnet' is not a poolwise pain model"),
    ({"window": 0}, r"window must be a positive number of frames, got 0"),
    ({"hop": "45"}, r"hop must be a positive number of frames, got '45'"),
    ({"frame_rate": 0.0}, r"frame_rate must be a positive number of Hz, got 0\.0"),
    ({"channel_names": ["a"] * 30}, r"channel names must be unique; repeated: a"),
    ({"threshold": 1.5}, r"threshold must be in \[0, 1\], got 1\.5"),
    ({"model_kwargs": {"n_channels": 29}}, r"do not make a working cnn_tap for 30 channels"),
    ({"metadata": "{not json"}, r"detector metadata is not valid JSON"),
    ({"metadata": json.dumps({k: v for k, v in _config().items() if k != "hop"})},
     r"missing fields \['hop'\]"),
    ({"metadata": json.dumps({**_config(), "colour": "red"})}, r"unknown fields \['colour'\]"),
    ({"state": nan_weights}, r"weights hold NaN or inf in classifier\.1\.weight"),
]


@pytest.mark.parametrize("change,match", BAD_CHECKPOINTS)
def test_load_and_export_refuse_bad_checkpoints(tmp_path, change, match):
    path = _checkpoint(tmp_path, **change)
    with pytest.raises(ValueError, match=rf"fold_X\.safetensors: .*{match}"):
        Detector.load(path)
    with pytest.raises(ValueError, match=match):
        export_detector(path, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "x.onnx.json").exists()


def test_the_config_refuses_what_the_file_would(tmp_path):
    with pytest.raises(ValueError, match="std must be finite"):
        DetectorConfig(**_config(std=[0.0] * 30))
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="weights hold NaN"):
        save_detector(tmp_path / "d.safetensors", DetectorConfig(**_config()), nan_weights)


@pytest.fixture(scope="module")
def detector_path(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("det"))


@pytest.mark.parametrize("value", [3e38, -1e30, 1e4])
def test_extreme_finite_input_is_refused_not_scored(detector_path, value):
    X = np.random.default_rng(0).normal(size=(3, 30, 180)).astype(np.float32)
    X[1, 27, 100] = value
    with pytest.raises(ValueError, match=r"1 of 3 windows cannot be scored \(first: window 1: "
                       r"\|z\| = .* on channel emg_1 at frame 100, bound 100"):
        Detector.load(detector_path).predict_proba(X)


def test_the_stream_marks_extreme_input_out_of_range(detector_path):
    stream = StreamingDetector(Detector.load(detector_path))
    frames = np.random.default_rng(0).normal(size=(360, 30)).astype(np.float32)
    frames[200:210, 5] = 3e38
    decisions = stream.push(frames)
    bad = [d for d in decisions if d.start <= 200 < d.end]
    assert bad and all(d.status == "out-of-range" and d.probability is None and d.label is None
                       for d in bad)
    assert all("angle_05" in d.detail for d in bad)
    assert all(d.status == "ok" for d in decisions if d not in bad)


def test_the_exported_graph_marks_what_it_must_not_score(detector_path, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(export_detector(detector_path, tmp_path / "d.onnx")),
                                   providers=["CPUExecutionProvider"])
    X = np.random.default_rng(0).normal(size=(4, 30, 180)).astype(np.float32)
    X[1, 0, 0], X[2, 3, 3], X[3, 4, 4] = 3e38, np.nan, 250.0
    prob, valid = session.run(None, {"windows": X})
    assert valid.tolist() == [True, False, False, False]
    assert np.isfinite(prob[0])


def test_stream_cli_prints_out_of_range_not_a_label(detector_path, tmp_path):
    frames = np.random.default_rng(0).normal(size=(270, 30))
    frames[:, 2] = 3e38
    csv = tmp_path / "s.csv"
    np.savetxt(csv, frames, delimiter=",", header=",".join(CHANNEL_NAMES), comments="")
    done = subprocess.run([sys.executable, "-m", "poolwise", "pain", "stream",
                           str(detector_path), "--input", str(csv)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if not line.startswith("#")]
    assert len(rows) == 3 and all("- unknown out-of-range" in r for r in rows)
    assert "not-protective" not in done.stdout and "3 out-of-range" in done.stdout


def test_random_bytes_on_stdin_are_one_clean_error(detector_path):
    done = subprocess.run([sys.executable, "-m", "poolwise", "pain", "stream",
                           str(detector_path), "--input", "-"],
                          input=bytes(range(256)) * 8, capture_output=True)
    assert done.returncode == 2
    err = done.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("poolwise: error: stdin: row 1 ")
    assert "Traceback" not in err


def test_a_nan_checkpoint_stops_the_stream_before_any_decision(tmp_path):
    path = _checkpoint(tmp_path, std=[0.0] * 30)
    assert main(["pain", "stream", str(path), "--input", "-"]) == 2


# --- options -------------------------------------------------------------------------------


@pytest.mark.parametrize("argv,option", [
    (["pain", "loso", "d.npz", "--out", "o", "--jobs", "0"], "--jobs"),
    (["pain", "loso", "d.npz", "--out", "o", "--epochs", "0"], "--epochs"),
    (["pain", "loso", "d.npz", "--out", "o", "--lr", "nan"], "--lr"),
    (["pain", "windows", "d", "--out", "o.npz", "--window", "0"], "--window"),
    (["pain", "windows", "d", "--out", "o.npz", "--step", "-3"], "--step"),
    (["pain", "stream", "c", "--input", "-", "--chunk", "0"], "--chunk"),
    (["pain", "stream", "c", "--input", "-", "--max-missing", "1.5"], "--max-missing"),
    (["pain", "stream", "c", "--input", "-", "--max-z", "0"], "--max-z"),
])
def test_impossible_options_are_refused_by_name(argv, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err


def test_an_unwritable_output_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    from poolwise.pain.data.synth import write_synthetic_cohort

    write_synthetic_cohort(tmp_path / "c", n_subjects=2, seed=0)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = ["pain", "windows", str(tmp_path / "c"), "--out", str(blocker / "w.npz")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(blocker) in err and "Traceback" not in err
    with pytest.raises(OSError):
        main(["--debug", *argv])


def test_reference_checkpoint_that_is_a_pickle_is_refused_plainly(tmp_path):
    import pickle

    path = tmp_path / "fold0.pth"
    path.write_bytes(pickle.dumps({"weights": object()}))
    with pytest.raises(ValueError, match=r"fold0\.pth: not a plain state_dict") as info:
        LSFAN.from_reference_checkpoint(path)
    assert "weights_only=False" not in str(info.value)


def test_a_model_that_cannot_take_the_data_fails_before_training(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(6, 30, 8)).astype(np.float32)
    path = _window_file(tmp_path, X=X)
    assert main(["pain", "loso", str(path), "--model", "lsfan", "--select-subjects", "1",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert ("model lsfan cannot take this data's windows (30 channels x 8 frames): window=8 "
            "is shorter than the 16 frames the CNN needs") in err
    assert not (tmp_path / "r").exists()
