"""Multi-label metrics, per-label thresholds and predicted label sets, with scikit-learn's implementations.

probs: sigmoid outputs (N, C); targets: multi-hot (N, C) of 0/1; thresholds: (C,) floats. A label is predicted
when its probability is >= its threshold (precision_recall_curve's convention). Undefined ratios are 0
(zero_division=0) except a label's average precision, which is NaN without positive rows: it has no ranking to
score, and macro mAP averages the labels that have one."""

from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    hamming_loss,
    multilabel_confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
)

from imgcls_cli.errors import UserError, shown

_EPS = 1e-12  # probabilities are clipped to [_EPS, 1 - _EPS] for the cross-entropy, as imgcls_cli.metrics' loss is
_TIE = 1e-12  # F1 values this close are one value: rounding must not decide the threshold


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """scikit-learn warns for every 0/0 that zero_division=0 resolves; those warnings would reach the user's
    terminal on each evaluation and say nothing the numbers do not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        yield


def _checked(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """probs as float64 (N, C) in [0, 1] and targets as int64 (N, C) of 0/1, or ValueError."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets)
    if probs.ndim != 2 or 0 in probs.shape:
        raise ValueError(f"probs must be a non-empty (N, C) array, got shape {probs.shape}")
    if targets.shape != probs.shape:
        raise ValueError(f"targets must have the shape of probs {probs.shape}, got {targets.shape}")
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise ValueError("probs must be finite probabilities in [0, 1]")
    if not np.isin(targets, (0, 1)).all():
        raise ValueError("targets must be multi-hot: every value 0 or 1")
    return probs, targets.astype(np.int64)


def _as_thresholds(thresholds: np.ndarray | float, num_labels: int) -> np.ndarray:
    """thresholds as a float64 (C,) array (a single number is every label's), or ValueError."""
    values = np.asarray(thresholds, dtype=np.float64)
    if values.ndim > 1 or (values.ndim == 1 and values.shape != (num_labels,)):
        raise ValueError(f"thresholds must be a number or have shape ({num_labels},), got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("thresholds must be finite")
    return np.broadcast_to(values, (num_labels,)).copy()


def _sklearn_view(targets: np.ndarray, preds: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The arrays and `labels` argument under which scikit-learn scores each column as one label.

    scikit-learn reads a (N, 1) array as one binary target with classes 0 and 1, not as one label; it is passed
    as a 1-D vector with labels=[1] (the positive class) instead."""
    if targets.shape[1] == 1:
        return targets[:, 0], preds[:, 0], [1]
    return targets, preds, list(range(targets.shape[1]))


def predicted_sets(probs: np.ndarray, thresholds: np.ndarray | float) -> np.ndarray:
    """The labels each image is predicted to have: bool (N, C), probability >= the label's threshold."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (N, C), got shape {probs.shape}")
    return probs >= _as_thresholds(thresholds, probs.shape[1])


def _best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold that maximizes F1 of one label with positive and negative rows.

    The candidates are precision_recall_curve's (each distinct score, predicting the scores >= it); ties go to
    the highest, which predicts the label least often. The threshold returned is the midpoint between the chosen
    score and the next lower score (0 below the lowest), not the score itself: the widest margin on these rows,
    so that a new image scoring a little below the chosen one is not cut off."""
    precision, recall, candidates = precision_recall_curve(y, p)
    precision, recall = precision[: len(candidates)], recall[: len(candidates)]  # the last point has no threshold
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    best = np.flatnonzero(f1 >= f1.max() - _TIE)[-1]
    chosen = float(candidates[best])
    below = p[p < chosen]
    return (chosen + float(below.max())) / 2 if below.size else chosen / 2


def tune_thresholds(probs: np.ndarray, targets: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per label, the threshold that maximizes that label's F1 on these (validation) rows; float64 (C,).

    A label without positive rows, or without negative ones, has nothing to separate and keeps `default`.
    Deterministic: the same rows give the same thresholds."""
    probs, targets = _checked(probs, targets)
    thresholds = np.full(probs.shape[1], float(default))
    for c in range(probs.shape[1]):
        if 0 < targets[:, c].sum() < len(targets):
            thresholds[c] = _best_f1_threshold(targets[:, c], probs[:, c])
    return thresholds


def average_precisions(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each label's average precision (average_precision_score), NaN for a label without positive rows."""
    probs, targets = _checked(probs, targets)
    ap = np.full(probs.shape[1], np.nan)
    for c in np.flatnonzero(targets.any(axis=0)):
        ap[c] = average_precision_score(targets[:, c], probs[:, c])
    return ap


def binary_cross_entropy(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean over images and labels of -[y log p + (1 - y) log(1 - p)], p clipped to [1e-12, 1 - 1e-12]: the
    reduction of MultilabelBCE, so a validation loss compares with its training loss."""
    probs, targets = _checked(probs, targets)
    p = np.clip(probs, _EPS, 1 - _EPS)
    return float(-(targets * np.log(p) + (1 - targets) * np.log1p(-p)).mean())


def multilabel_metrics(probs: np.ndarray, targets: np.ndarray, thresholds: np.ndarray | float,
                       loss: float | None = None) -> dict[str, float | int]:
    """mAP (macro, micro), micro and macro F1 / precision / recall at the thresholds, Hamming loss, subset
    accuracy, label cardinality of truth and predictions, loss and counts, as plain floats and ints.

    map_macro averages the labels with positive rows (map_macro_labels says how many; NaN when none has one);
    the macro P/R/F1 average every label, as scikit-learn does (a label without positives scores 0 there).
    accuracy is subset_accuracy: accuracy_score's meaning on multi-hot data. loss: the criterion's mean loss
    when the caller has it (computed from logits), else binary_cross_entropy of probs."""
    probs, targets = _checked(probs, targets)
    num_samples, num_labels = probs.shape
    preds = predicted_sets(probs, thresholds).astype(np.int64)
    ap = average_precisions(probs, targets)
    y_true, y_pred, labels = _sklearn_view(targets, preds)
    result: dict[str, float | int] = {
        "map_macro": float(np.nanmean(ap)) if not np.isnan(ap).all() else float("nan"),
        "map_micro": float(average_precision_score(targets.ravel(), probs.ravel())) if targets.any()
        else float("nan"),
        "map_macro_labels": int((~np.isnan(ap)).sum()),
    }
    scores = {}
    with _quiet():
        for average in ("micro", "macro"):
            scores[average] = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average,
                                                              zero_division=0)
    for average in ("micro", "macro"):
        result[f"f1_{average}"] = float(scores[average][2])
    for i, name in enumerate(("precision", "recall")):
        for average in ("micro", "macro"):
            result[f"{name}_{average}"] = float(scores[average][i])
    result["hamming_loss"] = float(hamming_loss(y_true, y_pred))
    result["subset_accuracy"] = float(accuracy_score(y_true, y_pred))
    result["accuracy"] = result["subset_accuracy"]
    result["label_cardinality_true"] = float(targets.sum(axis=1).mean())
    result["label_cardinality_predicted"] = float(preds.sum(axis=1).mean())
    result["loss"] = binary_cross_entropy(probs, targets) if loss is None else float(loss)
    result["num_samples"] = int(num_samples)
    result["num_labels"] = int(num_labels)
    return result


def per_label_rows(probs: np.ndarray, targets: np.ndarray, thresholds: np.ndarray | float,
                   classes: Sequence[str]) -> list[dict]:
    """One row per label: label, ap (NaN without positives), precision, recall, f1 at its threshold, support
    (positive rows), predicted (rows predicted to have it) and threshold."""
    probs, targets = _checked(probs, targets)
    if len(classes) != probs.shape[1]:
        raise ValueError(f"{len(classes)} class names for {probs.shape[1]} labels")
    thresholds = _as_thresholds(thresholds, probs.shape[1])
    preds = predicted_sets(probs, thresholds).astype(np.int64)
    ap = average_precisions(probs, targets)
    y_true, y_pred, labels = _sklearn_view(targets, preds)
    with _quiet():
        precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None,
                                                                   zero_division=0)
    support, predicted = targets.sum(axis=0), preds.sum(axis=0)
    return [
        {"label": str(name), "ap": float(ap[c]), "precision": float(precision[c]), "recall": float(recall[c]),
         "f1": float(f1[c]), "support": int(support[c]), "predicted": int(predicted[c]),
         "threshold": float(thresholds[c])}
        for c, name in enumerate(classes)
    ]


def confusion_counts(probs: np.ndarray, targets: np.ndarray, thresholds: np.ndarray | float) -> np.ndarray:
    """multilabel_confusion_matrix at the thresholds: int64 (C, 2, 2), each [[tn, fp], [fn, tp]]."""
    probs, targets = _checked(probs, targets)
    preds = predicted_sets(probs, thresholds).astype(np.int64)
    y_true, y_pred, labels = _sklearn_view(targets, preds)
    return multilabel_confusion_matrix(y_true, y_pred, labels=labels).astype(np.int64)


def check_thresholds(value: object, num_labels: int) -> np.ndarray:
    """A user's `threshold`: one number in (0, 1) for every label, or a list of num_labels of them; float64 (C,).
    Anything else is a one-line UserError."""
    def valid(v: object) -> bool:
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and 0.0 < float(v) < 1.0

    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not valid(value):
            raise UserError(f"threshold must be a number in (0, 1), not {shown(value)}.")
        return np.full(num_labels, float(value))
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise UserError(f"threshold must be a number in (0, 1) or a list of {num_labels} of them (one per label), "
                        f"not {shown(value)}.")
    values = list(value)
    if len(values) != num_labels:
        raise UserError(f"threshold lists {len(values)} values but there are {num_labels} labels; give one number "
                        f"in (0, 1) or {num_labels} of them.")
    for i, v in enumerate(values):
        if not valid(v):
            raise UserError(f"threshold {i + 1} of {num_labels} must be a number in (0, 1), not {shown(v)}.")
    return np.asarray(values, dtype=np.float64)
