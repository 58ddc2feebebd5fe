"""The scikit-learn estimators: sklearn's own checks, numpy3D input, groups, cross-validation."""

import numpy as np
import pytest
import torch

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import LeaveOneGroupOut, cross_validate  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from poolwise.pain.estimator import LSFANClassifier, PainClassifier  # noqa: E402
from poolwise.pain.models import create_model, model_input_kwargs  # noqa: E402


def _takes_one_channel(params: dict) -> bool:
    name = params.get("model", "lsfan")
    try:
        create_model(name, **model_input_kwargs(name, 1, params.get("length", 16)))
    except ValueError:
        return False
    return True


# sklearn's checks feed 2-D (n, features) data, read as one channel, to every model with its
# tiny test parameters that can take one channel (the CNN models resample each case to the 16
# time points they need). BANet needs angle + energy pairs and L-SFAN's encoder a token of 2+
# features, so they refuse one channel (test_models.py) and are checked on numpy3D below.
# Skipped by sklearn itself here: array-API input (SCIPY_ARRAY_API unset) and pandas input
# (pandas not installed).
# The ROCKET family is checked through one of its kinds: minirocket, multirocket and hydra are
# one class (RocketRidge) whose transforms test_baselines.py checks against aeon's own.
ESTIMATORS = [PainClassifier(**p) for p in PainClassifier._get_test_params()
              if _takes_one_channel(p) and p["model"] not in ("multirocket", "hydra")]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check):
    torch.set_num_threads(1)
    check(estimator)


@pytest.mark.parametrize("params", PainClassifier._get_test_params(),
                         ids=lambda p: p["model"])
def test_every_model_fits_numpy3d_with_three_classes(params):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(48, 6, 20)).astype(np.float32)
    y = np.tile(np.array(["a", "b", "c"]), 16)
    if params["model"] == "banet":
        params = {**params, "model_kwargs": {"n_segments": 3}}
    model = PainClassifier(**params).fit(X, y, groups=np.repeat(np.arange(4), 12))
    proba = model.predict_proba(X)
    assert proba.shape == (48, 3) and np.allclose(proba.sum(1), 1)
    assert set(model.predict(X)) <= {"a", "b", "c"}
    assert model.n_channels_ == 6 and model.n_timepoints_ == params.get("length", 20)


def test_lsfan_classifier_test_params_fit():
    torch.set_num_threads(1)
    (params,) = LSFANClassifier._get_test_params()
    X = np.random.default_rng(1).normal(size=(40, 3, 12)).astype(np.float32)
    model = LSFANClassifier(**params).fit(X, np.tile([0, 1], 20))
    assert model.predict_proba(X).shape == (40, 2) and model.n_timepoints_ == 16


def cohort(n_subjects=6, per_subject=16, seed=0):
    """Class 1 windows carry a slow oscillation on channel 2 (a learnable cue)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_subjects * per_subject, 4, 32)).astype(np.float32)
    y = np.tile(np.arange(per_subject) % 2, n_subjects)
    X[y == 1, 2] += 2.0 * np.sin(np.linspace(0, 3 * np.pi, 32))
    groups = np.repeat([f"S{i}" for i in range(n_subjects)], per_subject)
    return X, np.where(y == 1, "protective", "other"), groups


def test_lsfan_classifier_on_numpy3d_with_groups():
    torch.set_num_threads(1)
    X, y, groups = cohort()
    model = LSFANClassifier(epochs=8, min_steps=0, batch_size=16, random_state=0,
                            model_kwargs={"heads": 4})
    assert clone(model).get_params() == model.get_params()
    model.fit(X, y, groups=groups)
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(1), 1)
    assert set(model.predict(X)) <= {"other", "protective"}
    assert (model.predict(X) == y).mean() > 0.8
    with pytest.raises(ValueError, match="fitted on"):
        model.predict_proba(X[:, :, :20])
    with pytest.raises(ValueError, match="y holds one class"):
        clone(model).fit(X, np.full(len(X), "other"))


def test_multiclass_natively_with_any_labels():
    """Three classes (a cue of a different frequency each), string labels: one softmax output
    per class in the order of classes_, argmax predictions."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(144, 4, 32)).astype(np.float32)
    y = np.tile(np.arange(3), 48)
    for k in range(3):
        X[y == k, 2] += 2.0 * np.sin(np.linspace(0, (k + 1) * 2 * np.pi, 32))
    labels = np.array(["rest", "walk", "bend"])[y]
    model = LSFANClassifier(epochs=10, min_steps=0, batch_size=16, random_state=0).fit(
        X, labels, groups=np.repeat(np.arange(6), 24))
    assert model.classes_.tolist() == ["bend", "rest", "walk"]
    assert model.module_.classifier[-1].out_features == 3
    proba = model.predict_proba(X)
    assert proba.shape == (144, 3) and np.allclose(proba.sum(1), 1)
    assert (model.predict(X) == labels).mean() > 0.6  # chance: 1/3


def test_labels_of_mixed_kinds_are_refused_naming_them():
    X = np.zeros((6, 3, 32), np.float32)
    y = np.array([1, "1", 0, "a", 1, 0], dtype=object)  # 1 and "1" print alike
    with pytest.raises(ValueError, match=r"y mixes kinds of labels \(number 1, text '1'\); "
                                         r"give every label as one kind"):
        PainClassifier(model="cnn_tap").fit(X, y)


def test_validation_split_keeps_subjects_whole():
    _, y, groups = cohort()
    est = PainClassifier(validation_fraction=0.34)
    mask = est._split((y == "protective").astype(int), groups, np.random.default_rng(0))
    held = set(groups[mask])
    assert len(held) == 2 and not held & set(groups[~mask])


def test_cross_validate_leave_one_group_out():
    torch.set_num_threads(1)
    X, y, groups = cohort(n_subjects=4)
    scores = cross_validate(PainClassifier(model="cnn_tap", epochs=4, min_steps=0, batch_size=16,
                                           random_state=0),
                            X, y, groups=groups, cv=LeaveOneGroupOut(),
                            params={"groups": groups}, scoring="accuracy")
    assert len(scores["test_score"]) == 4 and np.all(scores["test_score"] >= 0)


def test_unequal_lengths_follow_the_length_policy():
    from poolwise.pain.estimator import to_length

    a = np.arange(6, dtype=np.float32).reshape(1, 6)
    b = np.array([[10.0, 20.0, 30.0]], dtype=np.float32)
    padded = to_length([a, b], 6, "pad")
    np.testing.assert_array_equal(padded[1, 0], [10, 20, 30, 30, 30, 30])  # edge, no zeros
    np.testing.assert_array_equal(to_length([a, b], 3, "truncate")[0, 0], [0, 1, 2])
    np.testing.assert_allclose(to_length([b], 5, "resample")[0, 0], [10, 15, 20, 25, 30])
    with pytest.raises(ValueError, match="case 1 has 3 time points, fewer than the 6"):
        to_length([a, b], 6, "truncate")
    with pytest.raises(ValueError, match="case 1 has 3 time points, expected 6; pass length_"):
        to_length([a, b], 6, "error")

    torch.set_num_threads(1)
    X, y, groups = cohort()
    cases = [x[:, : 24 + i % 9] for i, x in enumerate(X)]  # 24 to 32 time points
    with pytest.raises(ValueError, match=r"9 different lengths .* pass length_policy="):
        PainClassifier(model="gru").fit(cases, y)
    model = PainClassifier(model="cnn_tap", epochs=2, min_steps=0, batch_size=16,
                           length_policy="resample",
                           random_state=0).fit(cases, y, groups=groups)
    assert model.n_timepoints_ == 28  # the median length
    assert model.predict_proba(cases[:5]).shape == (5, 2)
    assert model.predict_proba(X[:5]).shape == (5, 2)  # equal length, another one: resampled
    with pytest.raises(ValueError, match="fitted on"):
        PainClassifier(model="gru", epochs=1, min_steps=0).fit(X, y).predict_proba(X[:, :, :20])


def test_small_data_get_a_budget_of_optimiser_steps():
    """32 fitting cases in batches of 40 are one step per epoch: the default budget of 500
    steps, not the 20 epochs, sets the length (here a budget of 30 for speed)."""
    torch.set_num_threads(1)
    X, y, _ = cohort(n_subjects=5, per_subject=8)
    model = PainClassifier(model="gru", epochs=4, min_steps=30, random_state=0).fit(X, y)
    assert len(model.history_) == 30  # one step per epoch
    assert len(PainClassifier(model="gru", epochs=4, min_steps=0).fit(X, y).history_) == 4
    assert PainClassifier().min_steps == 500
