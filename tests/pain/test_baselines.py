"""The time-series field's baselines: the ROCKET family (aeon's transforms + ridge) and
InceptionTime: parity with aeon's own classifiers, the clean protocol, checkpoints, bad input."""

import dataclasses
import sys

import numpy as np
import pytest
import torch
from _cohorts import small_cohort

pytest.importorskip("aeon")
from aeon.classification.convolution_based import (
    HydraClassifier,
    MiniRocketClassifier,
    MultiRocketClassifier,
)

from poolwise._io import read_safetensors
from poolwise.cli import main
from poolwise.pain.deploy.detector import Detector, DetectorConfig, save_detector
from poolwise.pain.deploy.export import export_detector
from poolwise.pain.deploy.streaming import StreamingDetector
from poolwise.pain.loso.config import LosoConfig
from poolwise.pain.loso.folds import run_fold
from poolwise.pain.models import count_parameters, create_model
from poolwise.pain.models.inception import InceptionTime
from poolwise.pain.train import TrainConfig, fit

# aeon's classifiers with the papers' sizes (aeon's MultiRocketClassifier defaults to 10,000
# kernels; the paper and aeon's MultiRocket transform to 6,250)
ROCKETS = {"minirocket": MiniRocketClassifier, "hydra": HydraClassifier,
           "multirocket": lambda **kw: MultiRocketClassifier(n_kernels=6250, **kw)}


def _two_classes(n=60, channels=3, window=30, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, channels, window)).astype(np.float32)
    y = np.arange(n) % 2
    X[y == 1, 0, 5:15] += 1.0
    return X, y


@pytest.mark.parametrize("name", sorted(ROCKETS))
def test_rocket_models_give_the_decisions_of_aeons_classifiers(name):
    """Balanced classes (equal weights) and the same seed: poolwise's fit through the training
    loop's entry point is aeon's pipeline (transform, scaler, RidgeClassifierCV)."""
    X, y = _two_classes()
    model = create_model(name, n_channels=3, window=30)
    # the kernels' seed that the training loop draws from its generator
    seed = int(torch.randint(2**31 - 1, (1,), generator=torch.Generator().manual_seed(3)))
    reference = ROCKETS[name](random_state=seed).fit(X[:40], y[:40])
    pipeline = getattr(reference, "pipeline_", None) or reference.clf_
    result = fit(model, torch.from_numpy(X[:40]), torch.from_numpy(y[:40]),
                 torch.from_numpy(X[40:]), torch.from_numpy(y[40:]), TrainConfig(),
                 torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = model(torch.from_numpy(X[40:])).numpy()
    decision = pipeline.decision_function(X[40:])
    np.testing.assert_allclose(logits[:, 1], decision, atol=2e-4)
    np.testing.assert_allclose(logits[:, 0], -decision, atol=2e-4)
    assert result.history[0]["alpha"] == pytest.approx(pipeline[-1].alpha_)
    assert result.epoch_chosen == 1 and len(result.history) == 1


def test_class_weights_reach_the_ridge():
    """Imbalanced classes: each window weighs 1 - n_c / N (as in the networks' loss), which
    moves the decisions away from the unweighted ridge's."""
    X, y = _two_classes(n=80)
    y[:60] = 0
    unweighted, weighted = (create_model("minirocket", n_channels=3, window=30) for _ in "ab")
    unweighted.fit_windows(X, y, np.ones(80), seed=1)
    w = np.where(y == 1, 60 / 80, 20 / 80)
    weighted.fit_windows(X, y, w, seed=1)
    with torch.no_grad():
        a, b = unweighted(torch.from_numpy(X)), weighted(torch.from_numpy(X))
    assert not torch.allclose(a, b, atol=1e-3)
    scaled = create_model("minirocket", n_channels=3, window=30)
    scaled.fit_windows(X, y, 10 * w, seed=1)  # only the weights' ratios matter
    with torch.no_grad():
        torch.testing.assert_close(scaled(torch.from_numpy(X)), b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(ROCKETS))
def test_a_fitted_rocket_model_round_trips_through_a_detector_checkpoint(tmp_path, name):
    X, _ = _two_classes(channels=30, window=20)
    model = create_model(name, n_channels=30, window=20, n_classes=3)
    model.fit_windows(X, np.arange(60) % 3, np.ones(60), seed=5)
    kwargs = {"n_channels": 30, "window": 20, "n_classes": 3}
    config = DetectorConfig(model=name, model_kwargs=kwargs,
                            channel_names=tuple(f"c{i}" for i in range(30)), frame_rate=40.0,
                            window=20, hop=10, mean=[0.0] * 30, std=[1.0] * 30, threshold=0.5,
                            class_names=("a", "b", "c"))
    path = save_detector(tmp_path / "fold_X.safetensors", config, model.state_dict())
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(X)), 1).numpy()
    np.testing.assert_allclose(Detector.load(path).predict_proba(X), expected, atol=1e-6)
    assert count_parameters(model) > 3 * model.coef.shape[1]


def test_aeons_transforms_leave_torchs_thread_count_alone():
    """numba shares the OpenMP runtime with torch; a transform must not change the threads a
    fold's process was given."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        model = create_model("minirocket", n_channels=3, window=20)
        model.fit_windows(*_two_classes(window=20)[:2], np.ones(60), seed=0)
        model(torch.zeros(2, 3, 20))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_class_missing_from_training_is_never_predicted():
    X, _ = _two_classes(n=60, window=20)
    model = create_model("hydra", n_channels=3, window=20, n_classes=3)
    model.fit_windows(X, np.arange(60) % 2, np.ones(60), seed=0)  # classes 0 and 1 only
    with torch.no_grad():
        prob = torch.softmax(model(torch.from_numpy(X)), 1)
    assert torch.isfinite(prob).all() and prob[:, 2].max() == 0
    assert set(prob.argmax(1).tolist()) <= {0, 1}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return small_cohort(tmp_path_factory.mktemp("cohort"), n_subjects=5, seed=4,
                        per_subject=20)


@pytest.mark.parametrize("name", ["minirocket", "multirocket", "hydra", "inception_time"])
def test_the_held_out_subject_changes_nothing_fitted(cohort, tmp_path, name):
    """Clean protocol: replacing every window of the held-out subject leaves every fitted
    number of its fold (kernels' biases, scaler, ridge and alpha; or the network's weights),
    the normalisation and the threshold bit for bit the same; only its scores change."""
    config = LosoConfig(name, train=TrainConfig(epochs=1, batch_size=16),
                        n_select_subjects=1)
    held_out = cohort.subjects[0]
    other = dataclasses.replace(cohort, X=cohort.X.copy())
    mine = other.subject == held_out
    other.X[mine] = np.random.default_rng(9).normal(5.0, 3.0, other.X[mine].shape)
    records = []
    for data, folder in ((cohort, tmp_path / "a"), (other, tmp_path / "b")):
        folder.mkdir()
        torch.set_num_threads(1)
        records.append(run_fold(data, config, held_out, folder))
    states = [read_safetensors(tmp_path / d / f"fold_{held_out}.safetensors") for d in "ab"]
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    first, second = records
    assert first["normalisation"] == second["normalisation"]
    assert first["threshold"] == second["threshold"] and first["history"] == second["history"]
    assert first["test"]["probabilities"] != second["test"]["probabilities"]


def test_too_short_windows_name_the_model_and_what_to_do():
    with pytest.raises(ValueError, match=r"minirocket needs windows of at least 9 frames.*got 8"
                       r".*pain windows --window"):
        create_model("minirocket", n_channels=3, window=8)
    with pytest.raises(ValueError, match=r"multirocket needs windows of at least 10 frames"):
        create_model("multirocket", n_channels=3, window=9)
    model = create_model("minirocket", n_channels=3, window=20)
    with pytest.raises(RuntimeError, match="not fitted: call fit_windows first"):
        model(torch.zeros(1, 3, 20))
    model.fit_windows(*_two_classes(window=20)[:2], np.ones(60), seed=0)
    with pytest.raises(ValueError, match=r"fitted to windows of 20 frames, got 30"):
        model(torch.zeros(1, 3, 30))
    with pytest.raises(ValueError, match=r"expected 3 signal channels at dim 1, got 4"):
        model(torch.zeros(1, 4, 20))


def test_missing_aeon_says_which_extra_to_install(monkeypatch):
    monkeypatch.delitem(sys.modules, "poolwise.pain.models.rocket")
    monkeypatch.setitem(sys.modules, "aeon.transformations.collection.convolution_based", None)
    with pytest.raises(ImportError, match=r"'minirocket' needs .*pip install 'poolwise\[rocket\]'"):
        create_model("minirocket", n_channels=3, window=20)


@pytest.fixture(scope="module")
def rocket_detector(tmp_path_factory):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 30, 60)).astype(np.float32)
    model = create_model("minirocket", n_channels=30, window=60)
    model.fit_windows(X, np.arange(40) % 2, np.ones(40), seed=0)
    config = DetectorConfig(model="minirocket", model_kwargs={"n_channels": 30, "window": 60},
                            channel_names=tuple(f"c{i}" for i in range(30)), frame_rate=60.0,
                            window=60, hop=15, mean=[0.0] * 30, std=[1.0] * 30, threshold=0.5)
    return save_detector(tmp_path_factory.mktemp("det") / "fold_P01.safetensors", config,
                         model.state_dict())


def test_rocket_detectors_stream_and_refuse_export(rocket_detector, tmp_path, capsys):
    detector = Detector.load(rocket_detector)
    rec = np.random.default_rng(3).normal(size=(300, 30)).astype(np.float32)
    starts = np.arange(0, 300 - 60 + 1, 15)
    expected = detector.predict_proba(np.stack([rec[s:s + 60].T for s in starts]))
    decisions = StreamingDetector(detector).push(rec)
    # numba's fastmath sums windows in another order one at a time than in a batch
    np.testing.assert_allclose([d.probability for d in decisions], expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"minirocket detector cannot be exported to onnx.*"
                       r"not in a torch graph.*pain stream"):
        export_detector(rocket_detector, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "x.onnx.json").exists()
    assert main(["pain", "models"]) == 0
    table = capsys.readouterr().out
    assert "| minirocket | fitted per fold | no (not a torch graph) |" in table
    assert "| lsfan | 8,282 | ONNX, TorchScript |" in table


def test_inception_time_follows_the_published_architecture():
    net = InceptionTime(n_channels=30)
    (network,) = net.networks
    assert len(network.blocks) == 6 and len(network.shortcuts) == 2
    block = network.blocks[0]
    assert [c.kernel_size[0] for c in block.convs] == [39, 19, 9]
    assert block.bottleneck.out_channels == 32 and block.norm.num_features == 128
    assert network.head.in_features == 128
    # hand count of one network on 30 channels: bottleneck 30*32 (first) / 128*32, three
    # convs 32*32*(39+19+9), the pool branch's 1x1 in*32, batch norm 2*128 per module;
    # shortcuts 30*128 + 256 and 128*128 + 256; the head 128*2 + 2
    convs = 32 * 32 * 67
    first = 30 * 32 + convs + 30 * 32 + 256
    later = 128 * 32 + convs + 128 * 32 + 256
    expected = first + 5 * later + (30 * 128 + 256) + (128 * 128 + 256) + 258
    assert count_parameters(net) == expected
    x = torch.randn(2, 30, 37)  # any length: "same" padding keeps it, GAP removes it
    assert net(x).shape == (2, 2)


def test_an_inception_ensemble_averages_its_networks_probabilities():
    torch.manual_seed(0)
    ensemble = InceptionTime(n_channels=4, n_classes=3, n_networks=3).eval()
    x = torch.randn(5, 4, 50)
    with torch.no_grad():
        mean = torch.stack([torch.softmax(n(x), 1) for n in ensemble.networks]).mean(0)
        torch.testing.assert_close(torch.softmax(ensemble(x), 1), mean)
