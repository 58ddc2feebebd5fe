"""scikit-learn/aeon-style estimators: ``LSFANClassifier`` and ``PainClassifier(model=...)``.

They take numpy3D ``(n_cases, n_channels, n_timepoints)`` (a 2-D ``(n_cases, n_timepoints)``
array is one channel, as in aeon), any two or more class labels sklearn accepts (the model gets
one output per class; a softmax over them, class weights w_c = 1 - n_c / N from the fitted
data), and ``groups`` (subjects) in ``fit``.
``fit`` holds out a validation part for picking the epoch: whole groups when ``groups`` is
given (so no subject is in both parts), else a stratified fraction of the windows. The z-score
statistics come from the fitting part only. Parameters are plain constructor arguments, so
``clone``, ``GridSearchCV``, ``cross_validate`` and ``LeaveOneGroupOut`` work.

The shape follows aeon's classifiers: the public ``fit`` / ``predict_proba`` / ``predict``
validate and convert the input (labels to indices 0..K-1, unequal lengths by
``length_policy``), then call the private ``_fit(X, y, groups)`` / ``_predict_proba(X)`` on a
float32 numpy3D array and class indices. :meth:`PainClassifier._get_test_params` gives the tiny
configuration of each model that the tests (sklearn's estimator checks included) run.
"""

from __future__ import annotations

import numbers
from typing import ClassVar

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from poolwise._names import check_distinct
from poolwise.pain.augment import apply_zscore, fit_zscore
from poolwise.pain.constants import MAX_ABS_Z
from poolwise.pain.models import list_models, model_input_kwargs
from poolwise.pain.train import TrainConfig, class_probabilities, fit_new_model

LENGTH_POLICIES = ("error", "pad", "truncate", "resample")


def _series_list(X: object) -> list[np.ndarray] | None:
    """``X`` as a list of (n_channels, n_timepoints_i) float32 arrays when it is a list or
    tuple of series (aeon's unequal-length form; 1-D cases are one channel), else None (a
    list of equal-length rows is 2-D data, as scikit-learn reads it)."""
    if not isinstance(X, (list, tuple)) or not X:
        return None
    series = [np.asarray(x, dtype=np.float32) for x in X]
    if all(x.ndim == 1 for x in series) and len({len(x) for x in series}) == 1:
        return None  # nested lists of equal rows: 2-D data, one channel, as sklearn means it
    series = [x[None, :] if x.ndim == 1 else x for x in series]
    bad = next((i for i, x in enumerate(series) if x.ndim != 2), None)
    if bad is not None:
        raise ValueError(f"case {bad} has shape {series[bad].shape}; each case must be "
                         "(n_channels, n_timepoints)")
    channels = {x.shape[0] for x in series}
    if len(channels) > 1:
        raise ValueError(f"the cases have different channel counts {sorted(channels)}; "
                         "only the length may differ")
    return series


def to_length(series: list[np.ndarray], length: int, policy: str) -> np.ndarray:
    """Cases of any length as one (n_cases, n_channels, length) array.

    ``pad``: longer cases are cut at the end, shorter ones repeat their last value (an edge
    pad: no artificial zeros, whose z-score could be extreme); ``truncate``: every case must be
    at least ``length`` long and is cut at the end; ``resample``: linear interpolation to
    ``length`` points over the case's own span; ``error``: every case must have ``length``.

    Raises:
        ValueError: naming the first case that the policy cannot take, and what to do.
    """
    if policy not in LENGTH_POLICIES:
        raise ValueError(f"length_policy={policy!r} is not one of {LENGTH_POLICIES}")
    out = np.empty((len(series), series[0].shape[0], length), dtype=np.float32)
    for i, x in enumerate(series):
        n = x.shape[1]
        if n == length:
            out[i] = x
        elif policy == "error":
            raise ValueError(f"case {i} has {n} time points, expected {length}; pass "
                             "length_policy='pad', 'truncate' or 'resample' for unequal lengths")
        elif n == 0:
            raise ValueError(f"case {i} has no time points")
        elif policy == "truncate" and n < length:
            raise ValueError(f"case {i} has {n} time points, fewer than the {length} that "
                             "length_policy='truncate' keeps; use 'pad' or 'resample'")
        elif policy in ("pad", "truncate"):
            out[i, :, : min(n, length)] = x[:, :length]
            out[i, :, n:] = x[:, -1:]
        else:  # resample
            grid = np.linspace(0, n - 1, length)
            out[i] = np.stack([np.interp(grid, np.arange(n), row) for row in x])
    return out


def _fit_length(series: list[np.ndarray], policy: str, length: int | None = None) -> int:
    """The common length the fitted model takes: ``length`` when given, else the longest case
    for ``pad``, the shortest for ``truncate``, the median for ``resample``."""
    if length is not None:
        return length
    lengths = [x.shape[1] for x in series]
    if policy == "pad":
        return max(lengths)
    if policy == "truncate":
        return min(lengths)
    if policy == "resample":
        return int(np.median(lengths))
    if len(set(lengths)) > 1:
        raise ValueError(f"the cases have {len(set(lengths))} different lengths "
                         f"({min(lengths)} to {max(lengths)} time points); pass length_policy="
                         "'pad', 'truncate' or 'resample'")
    return lengths[0]


def _as_3d(X: np.ndarray) -> np.ndarray:
    """Validated X as (n_cases, n_channels, n_timepoints): 2-D means one channel."""
    if X.ndim == 2:
        X = X[:, None, :]
    if X.ndim != 3:
        raise ValueError(f"X must be (n_cases, n_channels, n_timepoints), got shape {X.shape}")
    return X



def _check_label_kinds(y: np.ndarray) -> None:
    """Raises ValueError when ``y`` mixes text and number labels (``1`` and ``"1"`` print
    alike but would be two classes, and they cannot be sorted)."""
    if y.dtype != object:
        return
    kinds: dict[str, object] = {}
    for value in y.ravel():
        kind = "text" if isinstance(value, str) else "number" if isinstance(
            value, numbers.Number) else type(value).__name__
        kinds.setdefault(kind, value)
    if len(kinds) > 1:
        examples = ", ".join(f"{kind} {value!r}" for kind, value in kinds.items())
        raise ValueError(f"y mixes kinds of labels ({examples}); give every label as one "
                         "kind, e.g. all as text")

class PainClassifier(ClassifierMixin, BaseEstimator):
    """A poolwise pain model (``model``: any name of ``poolwise pain models``) as a classifier
    of two or more classes, in the order of ``classes_`` (sorted labels). With two classes the
    positive one is the larger label (1 = protective) and ``predict`` thresholds its
    probability at 0.5; with more, ``predict`` takes the most probable class."""

    # aeon's estimator tags: unequal-length input is a list of (n_channels, n_timepoints_i)
    # cases, made equal by ``length_policy`` ("error" refuses it)
    _tags: ClassVar[dict[str, object]] = {
        "capability:multivariate": True, "capability:unequal_length": True,
        "capability:missing_values": False, "X_inner_type": "numpy3D"}

    def __init__(self, model: str = "lsfan", *, epochs: int = 20, min_steps: int = 500,
                 batch_size: int = 40,
                 lr: float = 1e-3, weight_decay: float = 0.0, augment: bool = True,
                 validation_fraction: float = 0.2, model_kwargs: dict | None = None,
                 max_abs_z: float = MAX_ABS_Z, length_policy: str = "error",
                 length: int | None = None, random_state: int | None = None) -> None:
        self.model = model
        self.epochs = epochs
        self.min_steps = min_steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.augment = augment
        self.validation_fraction = validation_fraction
        self.model_kwargs = model_kwargs
        self.max_abs_z = max_abs_z
        self.length_policy = length_policy
        self.length = length
        self.random_state = random_state

    @classmethod
    def _get_test_params(cls, parameter_set: str = "default") -> list[dict]:
        """One tiny configuration per model (aeon's convention): a few epochs, small batches,
        for the models built on the 2D CNN (which need >= 16 time points) and the ROCKET
        family every case resampled to 16 points, so that short 2-D test data (sklearn's
        checks) fits them, and a narrow, shallow InceptionTime."""
        models = list_models() if cls is PainClassifier else ["lsfan"]
        params = []
        for name in models:
            entry = {"epochs": 10, "min_steps": 0, "batch_size": 16, "lr": 3e-3, "random_state": 0}
            if cls is PainClassifier:
                entry["model"] = name
            if "window" in model_input_kwargs(name, 1, 16):
                entry.update(length_policy="resample", length=16)
            if name == "inception_time":  # the published width and depth, cut to test size
                entry["model_kwargs"] = {"depth": 3, "filters": 8, "bottleneck": 8}
            params.append(entry)
        return params

    def _split(self, y: np.ndarray, groups, rng: np.random.Generator) -> np.ndarray:
        """Boolean mask of the validation cases."""
        n = len(y)
        if groups is not None:
            groups = np.asarray(groups)
            if len(groups) != n:
                raise ValueError(f"{n} cases but {len(groups)} groups")
            names = rng.permutation(np.unique(groups))
            if len(names) >= 2:
                k = max(1, round(self.validation_fraction * len(names)))
                for start in range(len(names)):  # first choice whose rest has both classes
                    chosen = np.roll(names, -start)[:k]
                    mask = np.isin(groups, chosen)
                    if len(np.unique(y[~mask])) == len(np.unique(y)):
                        return mask
        mask = np.zeros(n, dtype=bool)
        for c in np.unique(y):
            index = rng.permutation(np.flatnonzero(y == c))
            take = min(len(index) - 1, max(1, round(self.validation_fraction * len(index))))
            mask[index[:take]] = True
        return mask

    def fit(self, X: ArrayLike, y: ArrayLike, groups: ArrayLike | None = None) -> PainClassifier:
        """Validates ``X`` (numpy3D, 2-D as one channel, or a list of cases of any length) and
        the labels, then trains (:meth:`_fit`)."""
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y "
                             "is None")
        if self.length is not None and (isinstance(self.length, bool)
                                        or not isinstance(self.length, int) or self.length < 1):
            raise ValueError(f"length must be a positive number of time points or None, got "
                             f"{self.length!r}")
        series = _series_list(X)
        if series is not None:
            X = to_length(series, _fit_length(series, self.length_policy, self.length),
                          self.length_policy)
        X, y = validate_data(self, X, y, allow_nd=True, dtype=np.float32)
        X = self._to_length(_as_3d(X))
        _check_label_kinds(y)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if y.dtype.kind in "OUS":
            check_distinct([str(c) for c in self.classes_], "class label", "y")
        if len(self.classes_) < 2:
            raise ValueError(f"y holds one class ({self.classes_[0]!r}); a classifier needs at "
                             "least two")
        self.n_channels_, self.n_timepoints_ = X.shape[1], X.shape[2]
        self._fit(X, np.searchsorted(self.classes_, y).astype(np.int64), groups)
        return self

    def _to_length(self, X: np.ndarray) -> np.ndarray:
        """An equal-length array brought to ``length`` by the policy, when ``length`` is set."""
        if self.length is None or X.shape[-1] == self.length:
            return X
        return to_length(list(X), self.length, self.length_policy)

    def _fit(self, X: np.ndarray, y: np.ndarray, groups: ArrayLike | None) -> None:
        """Trains on float32 ``X`` (n, channels, time) and class indices ``y`` (0..K-1)."""
        seed = 0 if self.random_state is None else int(self.random_state)
        select = self._split(y, groups, np.random.default_rng(seed))
        self.mean_, self.std_ = fit_zscore(X[~select])
        kwargs = {**model_input_kwargs(self.model, X.shape[1], X.shape[2]),
                  "n_classes": len(self.classes_), **(self.model_kwargs or {})}
        config = TrainConfig(epochs=self.epochs, min_steps=self.min_steps,
                             batch_size=self.batch_size, lr=self.lr,
                             weight_decay=self.weight_decay, online_augment=self.augment)
        self.module_, result = fit_new_model(
            self.model, kwargs,
            torch.from_numpy(apply_zscore(X[~select], self.mean_, self.std_)),
            torch.from_numpy(y[~select]),
            torch.from_numpy(apply_zscore(X[select], self.mean_, self.std_)),
            torch.from_numpy(y[select]), config, seed)
        self.epoch_chosen_ = result.epoch_chosen
        self.history_ = result.history

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Validates ``X`` against the fitted shape (applying ``length_policy`` to cases of
        another length), then :meth:`_predict_proba`: (n_cases, K), columns in the order of
        ``classes_``."""
        check_is_fitted(self, "module_")
        series = _series_list(X)
        if series is not None:
            X = to_length(series, self.n_timepoints_, self.length_policy)
        X = _as_3d(validate_data(self, X, allow_nd=True, dtype=np.float32, reset=False))
        if X.shape[-1] != self.n_timepoints_ and self.length_policy != "error":
            X = to_length(list(X), self.n_timepoints_, self.length_policy)  # another length
        if X.shape[1:] != (self.n_channels_, self.n_timepoints_):
            raise ValueError(f"X has shape {X.shape[1:]} per case, the classifier was fitted "
                             f"on {(self.n_channels_, self.n_timepoints_)}")
        return self._predict_proba(X)

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities of float32 ``X`` of the fitted shape; refuses cases far outside the
        training data and non-finite outputs."""
        z = apply_zscore(X, self.mean_, self.std_)
        far = np.abs(z) > self.max_abs_z
        if far.any():
            i, c, t = np.argwhere(far)[0]
            raise ValueError(
                f"{int(far.any(axis=(1, 2)).sum())} of {len(X)} cases are far outside the "
                f"training data (first: case {i}, channel {c}, time point {t}: |z| = "
                f"{abs(z[i, c, t]):.3g} > max_abs_z={self.max_abs_z:g}); they are not scored")
        p = class_probabilities(self.module_, torch.from_numpy(z)).astype(np.float64)
        if not np.isfinite(p).all():
            raise ValueError(f"the model gives non-finite probabilities for "
                             f"{int((~np.isfinite(p).all(axis=1)).sum())} of {len(X)} cases")
        return p

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Labels of ``classes_``: the positive probability >= 0.5 for two classes, else the
        most probable class."""
        check_is_fitted(self, "module_")
        proba = self.predict_proba(X)
        if len(self.classes_) == 2:
            return self.classes_[(proba[:, 1] >= 0.5).astype(np.int64)]
        return self.classes_[proba.argmax(axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.non_deterministic = False
        tags.input_tags.three_d_array = True  # informative; sklearn's checks use 2-D X
        return tags


class LSFANClassifier(PainClassifier):
    """L-SFAN (the published network) as a scikit-learn classifier; see PainClassifier."""
