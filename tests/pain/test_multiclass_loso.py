"""LOSO, the challenge protocol and the report on K-class data of any channel count."""

import json
import re

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, matthews_corrcoef

from poolwise.cli import main
from poolwise.pain.data.dataset import WindowDataset
from poolwise.pain.data.generic import synthetic_windows
from poolwise.pain.deploy.detector import Detector
from poolwise.pain.deploy.streaming import StreamingDetector
from poolwise.pain.loso.records import load_run
from poolwise.pain.loso.report import write_report
from poolwise.pain.loso.run import LosoConfig, run_loso
from poolwise.pain.loso.summary import summarise_run
from poolwise.pain.metrics import multiclass_metrics
from poolwise.pain.train import TrainConfig

FAST = TrainConfig(epochs=2, batch_size=16)


@pytest.fixture(scope="module")
def data():
    return synthetic_windows(n_subjects=6, n_classes=3, n_channels=6, window=32, per_class=5)


def test_multiclass_folds_record_every_class_probability(data, tmp_path):
    config = LosoConfig("lsfan", train=FAST, n_select_subjects=1)
    records = run_loso(data, tmp_path, config, folds=["0-1"])
    for record in records:
        prob = np.array(record["test"]["probabilities"])
        labels = np.array(record["test"]["labels"])
        assert prob.shape == (15, 3) and np.allclose(prob.sum(1), 1, atol=1e-5)
        assert record["class_names"] == ["class 0", "class 1", "class 2"]
        kwargs = record["model_kwargs"]
        assert kwargs["n_channels"] == 6 and kwargs["n_classes"] == 3
        assert record["threshold"]["value"] is None
        pred = prob.argmax(1)
        m = record["metrics"]
        assert m == multiclass_metrics(labels, prob)
        assert m["accuracy"] == pytest.approx(float((pred == labels).mean()))
        assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, pred))
        assert m["mcc"] == pytest.approx(matthews_corrcoef(labels, pred))
        # the fold's checkpoint reproduces its probabilities from raw windows
        detector = Detector.load(tmp_path / record["weights"]["file"])
        raw = data.X[record["test"]["window_index"]]
        assert np.allclose(detector.predict_proba(raw), prob, atol=1e-5)
        assert (detector.predict(raw) == pred).all()
        assert detector.class_names == tuple(data.class_names)
    with pytest.raises(ValueError, match="this detector has 3 classes"):
        StreamingDetector(detector)


def test_multiclass_report(data, tmp_path):
    config = LosoConfig("cnn_tap", train=FAST, n_select_subjects=1)
    run_loso(data, tmp_path / "run", config, folds=["0-2"])
    summary = summarise_run(load_run(tmp_path / "run"))
    run = load_run(tmp_path / "run")
    y = np.concatenate([f["test"]["labels"] for f in run.folds])
    p = np.concatenate([f["test"]["probabilities"] for f in run.folds])
    assert summary["pooled"]["macro_f1"] == pytest.approx(f1_score(y, p.argmax(1),
                                                                   average="macro"))
    assert summary["metrics"][:3] == ["macro_f1", "accuracy", "balanced_accuracy"]
    assert np.array(summary["confusion"]).sum() == len(y)
    assert set(summary["per_subject"]) == {"S01", "S02", "S03"}
    report = write_report([tmp_path / "run"], tmp_path / "report").read_text()
    assert "3 classes: class 0, class 1, class 2" in report
    assert "## F1 per class (pooled)" in report and "balanced accuracy" in report
    assert "confusion_matrices.svg" in report
    rows = (tmp_path / "report" / "per_subject.csv").read_text().splitlines()
    assert rows[0].startswith("model,protocol,subject,macro_f1,accuracy,balanced_accuracy")


def test_one_report_refuses_two_class_sets(data, tmp_path):
    config = LosoConfig("gru", train=TrainConfig(epochs=1), n_select_subjects=1)
    run_loso(data, tmp_path / "k3", config, folds=["0"])
    binary = data.subset(data.y < 2)
    binary = WindowDataset(binary.X, binary.y, binary.subject, binary.group, binary.exercise,
                           binary.channel_names, binary.frame_rate, binary.step)
    run_loso(binary, tmp_path / "k2", config, folds=["0"])
    with pytest.raises(ValueError, match="one report holds runs of one class set"):
        write_report([tmp_path], tmp_path / "report")


def _split(tmp_path, split):
    path = tmp_path / "split.json"
    path.write_text(json.dumps(split))
    return path


def test_challenge_protocol_end_to_end(data, tmp_path, capsys):
    windows = data.save(tmp_path / "w.npz")
    split = {"train": ["S01", "S02", "S03"], "validation": ["S04"], "test": ["S05", "S06"]}
    out = tmp_path / "run"
    assert main(["pain", "loso", str(windows), "--protocol", "challenge", "--split",
                 str(_split(tmp_path, split)), "--model", "gru", "--epochs", "2",
                 "--out", str(out)]) == 0
    assert "CHALLENGE protocol" in capsys.readouterr().out
    record = json.loads((out / "fold_challenge.json").read_text())
    assert record["train_subjects"] == split["train"]
    assert record["val_subjects"] == split["validation"]
    assert record["normalisation"]["fitted_on"] == split["train"]
    assert sorted(record["test_subjects"]) == split["test"]
    assert set(record["test"]["subject"]) == set(split["test"])
    assert len(record["test"]["labels"]) == int(np.isin(data.subject, split["test"]).sum())
    # resumes: the one fold is done
    assert main(["pain", "loso", str(windows), "--protocol", "challenge", "--split",
                 str(_split(tmp_path, split)), "--model", "gru", "--epochs", "2",
                 "--out", str(out)]) == 0
    assert "done earlier" in capsys.readouterr().out
    assert main(["pain", "report", str(out), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "gru [challenge split]" in report and "| 1/1 | 2 |" in report
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())[0]
    assert set(summary["per_subject"]) == {"S05", "S06"}


@pytest.mark.parametrize("split,message", [
    ({"train": ["S01"], "validation": ["S02"]}, r"split\.json: a split is"),
    ({"train": ["S01", "S09"], "validation": ["S02"], "test": ["S03"]},
     r"split\.json: train subject 'S09' is not in the data"),
    ({"train": ["S01", "S02"], "validation": ["S02"], "test": ["S03"]},
     r"split\.json: subject 'S02' is in both 'train' and 'validation'"),
    ({"train": ["S01"], "validation": [], "test": ["S03"]},
     r"'validation' must be a non-empty list"),
])
def test_bad_splits_fail_before_training(data, tmp_path, capsys, split, message):
    windows = data.save(tmp_path / "w.npz")
    assert main(["pain", "loso", str(windows), "--protocol", "challenge", "--split",
                 str(_split(tmp_path, split)), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()


def test_split_goes_with_the_challenge_protocol(data, tmp_path, capsys):
    windows = data.save(tmp_path / "w.npz")
    assert main(["pain", "loso", str(windows), "--out", str(tmp_path / "r"),
                 "--split", str(_split(tmp_path, {}))]) == 2
    assert "--split FILE goes with --protocol challenge" in capsys.readouterr().err
    assert main(["pain", "loso", str(windows), "--out", str(tmp_path / "r"),
                 "--protocol", "challenge"]) == 2
    assert "--split FILE goes with --protocol challenge" in capsys.readouterr().err


def test_a_class_missing_from_a_fold_fails_before_training(data, tmp_path):
    only_first = (data.y != 2) | (data.subject == "S01")  # class 2 only in subject S01
    lacking = data.subset(only_first)
    with pytest.raises(ValueError, match=r"fold S01: the other subjects have no window of "
                                         r"class 2 \('class 2'\)"):
        run_loso(lacking, tmp_path, LosoConfig("gru", train=FAST, n_select_subjects=1))
    assert not tmp_path.joinpath("run.json").exists()


def test_a_class_without_windows_fails_before_training(data, tmp_path):
    one = data.subset(data.y != 1)
    with pytest.raises(ValueError, match=r"class 1 \('class 1'\) has no window"):
        run_loso(one, tmp_path, LosoConfig("gru", train=FAST, n_select_subjects=1))


def test_windows_validate_labels_against_class_names(data):
    with pytest.raises(ValueError, match=r"label 3 of window 0 is not a class index 0\.\.2 "
                                         r"\(class 0, class 1, class 2\)"):
        WindowDataset(data.X[:2], np.array([3, 0]), data.subject[:2], data.group[:2],
                      data.exercise[:2], data.channel_names, class_names=data.class_names)
    with pytest.raises(ValueError, match="class_names must name two or more distinct classes"):
        WindowDataset(data.X[:2], np.array([0, 0]), data.subject[:2], data.group[:2],
                      data.exercise[:2], data.channel_names, class_names=("a", "a"))


def test_class_names_survive_a_save(data, tmp_path):
    loaded = WindowDataset.load(data.save(tmp_path / "w.npz"))
    assert loaded.class_names == data.class_names and loaded.n_classes == 3


def test_model_options_fit_banet_to_other_data(data, tmp_path, capsys):
    windows = data.save(tmp_path / "w.npz")
    args = ["pain", "loso", str(windows), "--model", "banet", "--epochs", "1", "--folds", "0",
            "--select-subjects", "1", "--out", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "model banet cannot take this data's windows (6 channels x 32 frames)" in err
    assert "pass n_segments between 1 and 3" in err
    assert main([*args, "--model-option", "n_segments=3"]) == 0
    record = json.loads((tmp_path / "run" / "fold_S01.json").read_text())
    assert record["model_kwargs"]["n_segments"] == 3
    with pytest.raises(SystemExit):
        main([*args, "--model-option", "n_segments"])
    assert "is not KEY=VALUE" in capsys.readouterr().err


def test_explanations_of_a_k_class_run_use_its_class_names(data, tmp_path):
    from poolwise.pain.deploy.explain import explain_run, grad_cam

    run_loso(data, tmp_path, LosoConfig("lsfan", train=FAST, n_select_subjects=1),
             folds=["0"])
    arrays = explain_run(tmp_path, data)
    assert [int(arrays[f"n_class_{k}"]) for k in range(3)] == [5, 5, 5]
    assert "n_protective" not in arrays
    # each class's map explains that class's logit
    from poolwise.pain.deploy.detector import Detector

    model = Detector.load(tmp_path / "fold_S01.safetensors").model
    record = json.loads((tmp_path / "fold_S01.json").read_text())
    index = np.array(record["test"]["window_index"])
    mean, std = (np.array(record["normalisation"][k], np.float32)[:, None] for k in ("mean", "std"))
    x = (data.X[index] - mean) / std
    import torch

    first = torch.from_numpy(x[data.y[index] == 2])
    assert np.allclose(arrays["cam_class_2"], grad_cam(model, first, target=2).numpy().mean(0),
                       atol=1e-6)
    with pytest.raises(ValueError, match="its test windows are not those of the given data"):
        explain_run(tmp_path, data.subset(data.subject != "S01"))


def test_a_k_class_detector_exports_every_class_probability(data, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    from poolwise.pain.deploy.export import export_detector

    run_loso(data, tmp_path, LosoConfig("cnn_tap", train=FAST, n_select_subjects=1),
             folds=["0"])
    out = export_detector(tmp_path / "fold_S01.safetensors", tmp_path / "d.onnx")
    sidecar = json.loads((tmp_path / "d.onnx.json").read_text())
    assert sidecar["class_names"] == list(data.class_names)
    assert "(batch, 3)" in sidecar["outputs"]["probability"]
    session = onnxruntime.InferenceSession(str(out))
    prob, valid = session.run(None, {"windows": data.X[:4]})
    expected = Detector.load(tmp_path / "fold_S01.safetensors").predict_proba(data.X[:4])
    assert prob.shape == (4, 3) and valid.all()
    assert np.allclose(prob, expected, atol=1e-5)


def test_one_report_refuses_runs_of_other_data(data, tmp_path):
    config = LosoConfig("gru", train=TrainConfig(epochs=1), n_select_subjects=1)
    run_loso(data, tmp_path / "all", config, folds=["0"])
    fewer = data.subset(np.arange(len(data)) % 5 != 0)  # the same classes, other windows
    run_loso(fewer, tmp_path / "fewer", config, folds=["0"])
    with pytest.raises(ValueError, match=r"one report holds runs of one data set: .* was made "
                       r"from windows with fingerprint \w+, .* from \w+; report them separately"):
        write_report([tmp_path], tmp_path / "report")
