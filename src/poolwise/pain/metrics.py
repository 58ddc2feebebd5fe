"""Detection metrics (binary, and K-class), pooled over windows and per subject.

Pure numpy. Class 1 is "protective". Where a metric is undefined on the data (a subject whose
windows are all of one class has no ROC-AUC; an F1 whose precision and recall are both 0/0) the
value is ``None``, never a NaN that would poison an average: :func:`poolwise.stats.summarise`
averages the defined values and says how many there were.

Definitions (TP, FP, FN, TN of class 1; n = all windows):

- F1 of class c: 2 TP_c / (2 TP_c + FP_c + FN_c); undefined when the denominator is 0 (class c
  neither present nor predicted).
- Macro F1: the mean of the F1 of class 0 and class 1 (each with its own TP/FP/FN; the authors'
  code used class-1 precision in place of recall, which this is not).
- Accuracy: (TP + TN) / n.
- MCC: (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)); 0 when a factor is 0 (sklearn's
  convention) but only if both classes are present; undefined otherwise.
- ROC-AUC: P(score of a random positive > score of a random negative) + 0.5 P(tie), i.e. the
  Mann-Whitney U statistic over n_pos n_neg; undefined without both classes.
- PR-AUC: average precision, sum over thresholds of (R_k - R_{k-1}) P_k with thresholds at the
  distinct scores (ties taken together); undefined without positives.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

METRICS = ("f1", "macro_f1", "accuracy", "mcc", "roc_auc", "pr_auc")


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """2x2 matrix: rows true class (0, 1), columns predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"labels {y_true.shape} and predictions {y_pred.shape} differ in shape")
    bad = ~np.isin(y_true, (0, 1)) | ~np.isin(y_pred, (0, 1))
    if bad.any():
        raise ValueError(f"labels must be 0 or 1; got {np.unique(np.r_[y_true, y_pred])}")
    return np.bincount(2 * y_true + y_pred, minlength=4).reshape(2, 2)


def _f1(tp: int, fp: int, fn: int) -> float | None:
    denominator = 2 * tp + fp + fn
    return None if denominator == 0 else 2 * tp / denominator


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float | None:
    y_true = np.asarray(y_true)
    n_pos = int((y_true == 1).sum())
    n_neg = len(y_true) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)  # average ranks: ties count one half
    u = ranks[y_true == 1].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def average_precision(y_true: np.ndarray, score: np.ndarray) -> float | None:
    y_true = np.asarray(y_true)
    score = np.asarray(score, dtype=np.float64)
    n_pos = int((y_true == 1).sum())
    if n_pos == 0:
        return None
    order = np.argsort(-score, kind="stable")
    s, t = score[order], y_true[order] == 1
    last_of_tie = np.r_[s[1:] != s[:-1], True]  # a threshold takes all tied scores at once
    tp = np.cumsum(t)[last_of_tie]
    predicted = np.flatnonzero(last_of_tie) + 1
    recall = tp / n_pos
    precision = tp / predicted
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def binary_metrics(
    y_true: np.ndarray, prob: np.ndarray, threshold: float = 0.5
) -> dict[str, float | None]:
    """All of :data:`METRICS` for protective-class probabilities ``prob``."""
    y_true = np.asarray(y_true, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    if len(y_true) == 0:
        raise ValueError("no windows to score")
    if not np.isfinite(prob).all():
        raise ValueError(f"{int((~np.isfinite(prob)).sum())} probabilities are not finite")
    (tn, fp), (fn, tp) = confusion(y_true, (prob >= threshold).astype(np.int64)).tolist()
    f1_pos, f1_neg = _f1(tp, fp, fn), _f1(tn, fn, fp)
    both_classes = 0 < y_true.sum() < len(y_true)
    if both_classes:
        denominator = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
        mcc = 0.0 if denominator == 0 else (tp * tn - fp * fn) / math.sqrt(denominator)
    else:
        mcc = None
    return {
        "f1": f1_pos,
        "macro_f1": None if f1_pos is None or f1_neg is None else (f1_pos + f1_neg) / 2,
        "accuracy": (tp + tn) / len(y_true),
        "mcc": mcc,
        "roc_auc": roc_auc(y_true, prob),
        "pr_auc": average_precision(y_true, prob),
    }


MULTICLASS_METRICS = ("macro_f1", "accuracy", "balanced_accuracy", "mcc", "roc_auc", "pr_auc")


def multiclass_confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """K x K matrix: rows true class 0..K-1, columns predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"labels {y_true.shape} and predictions {y_pred.shape} differ in shape")
    bad = (y_true < 0) | (y_true >= n_classes) | (y_pred < 0) | (y_pred >= n_classes)
    if bad.any():
        raise ValueError(f"labels must be class indices 0..{n_classes - 1}; got "
                         f"{np.unique(np.r_[y_true, y_pred])}")
    return np.bincount(n_classes * y_true + y_pred, minlength=n_classes**2).reshape(
        n_classes, n_classes)


def multiclass_metrics(y_true: np.ndarray, prob: np.ndarray) -> dict[str, object]:
    """Metrics of K-class probabilities ``prob`` (n, K), predictions their argmax.

    - ``f1_per_class``: each class's F1 (None where undefined: neither present nor predicted);
      ``macro_f1``: their mean, None if any class's F1 is undefined (as in the binary case);
    - ``accuracy``; ``balanced_accuracy``: the mean recall over the classes present;
    - ``mcc``: the K-class Matthews correlation (Gorodkin's R_K; 0 where its denominator is
      0), None with fewer than two classes present;
    - ``roc_auc`` / ``pr_auc``: one class against the rest, averaged over the classes present
      (:func:`roc_auc` and :func:`average_precision` of ``prob[:, k]``); None with fewer than
      two classes present.

    With K = 2 every value but ``balanced_accuracy`` and ``f1_per_class`` equals
    :func:`binary_metrics` at threshold 0.5 except where ``prob[:, 1]`` is exactly 0.5 (argmax
    then picks class 0).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim != 2 or len(prob) != len(y_true):
        raise ValueError(f"expected probabilities (n, K) for {len(y_true)} labels, got shape "
                         f"{prob.shape}")
    if len(y_true) == 0:
        raise ValueError("no windows to score")
    if not np.isfinite(prob).all():
        raise ValueError(f"{int((~np.isfinite(prob)).sum())} probabilities are not finite")
    k = prob.shape[1]
    matrix = multiclass_confusion(y_true, prob.argmax(1), k)
    tp = np.diag(matrix)
    true, predicted = matrix.sum(1), matrix.sum(0)
    f1 = [_f1(int(tp[c]), int(predicted[c] - tp[c]), int(true[c] - tp[c])) for c in range(k)]
    present = np.flatnonzero(true > 0)
    n = len(y_true)
    if len(present) >= 2:
        cov_tp = tp.sum() * n - true @ predicted
        denominator = math.sqrt(float(n * n - predicted @ predicted) * float(n * n - true @ true))
        mcc = 0.0 if denominator == 0 else float(cov_tp) / denominator
        aucs = [roc_auc((y_true == c).astype(np.int64), prob[:, c]) for c in present]
        aps = [average_precision((y_true == c).astype(np.int64), prob[:, c]) for c in present]
        roc, pr = float(np.mean(aucs)), float(np.mean(aps))
    else:
        mcc = roc = pr = None
    return {
        "f1_per_class": f1,
        "macro_f1": None if any(v is None for v in f1) else float(np.mean(f1)),
        "accuracy": float(tp.sum() / n),
        "balanced_accuracy": float(np.mean(tp[present] / true[present])),
        "mcc": mcc,
        "roc_auc": roc,
        "pr_auc": pr,
    }


def metric_names(n_classes: int) -> tuple[str, ...]:
    """The metrics :func:`score` returns for ``n_classes`` classes (scalars only)."""
    return METRICS if n_classes == 2 else MULTICLASS_METRICS


def score(y_true: np.ndarray, prob: np.ndarray) -> dict[str, object]:
    """:func:`binary_metrics` of protective-class probabilities (1-D ``prob``, the two-class
    task) or :func:`multiclass_metrics` of (n, K) probabilities, K > 2.

    The two forms are what LOSO fold records hold: two classes keep the binary definitions
    (and their values) unchanged."""
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim == 1:
        return binary_metrics(y_true, prob)
    if prob.ndim == 2 and prob.shape[1] == 2:
        raise ValueError("two-class probabilities are given as the protective class's only "
                         "(1-D); pass prob[:, 1]")
    return multiclass_metrics(y_true, prob)


def confusion_matrix(y_true: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """The confusion matrix of :func:`score`'s predictions (rows true, columns predicted):
    threshold 0.5 for 1-D ``prob``, argmax for (n, K)."""
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim == 1:
        return confusion(y_true, (prob >= 0.5).astype(np.int64))
    return multiclass_confusion(y_true, prob.argmax(1), prob.shape[1])


def per_subject_metrics(
    y_true: np.ndarray, prob: np.ndarray, subject: np.ndarray
) -> dict[str, dict[str, object]]:
    """:func:`score` of each subject's windows, subjects in sorted order."""
    subject = np.asarray(subject)
    prob = np.asarray(prob)
    return {
        str(s): score(y_true[subject == s], prob[subject == s])
        for s in sorted(set(subject.tolist()))
    }
