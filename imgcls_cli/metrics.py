"""Classification metrics computed with numpy from predicted probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_EPS = 1e-12


def _check_labels(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Return targets and preds as 1-D int64 arrays, or raise ValueError."""
    targets = np.asarray(targets)
    preds = np.asarray(preds)
    if targets.ndim != 1 or preds.ndim != 1:
        raise ValueError(f"targets and preds must be 1-D, got shapes {targets.shape} and {preds.shape}")
    if targets.shape != preds.shape:
        raise ValueError(f"targets and preds differ in length: {targets.shape[0]} vs {preds.shape[0]}")
    if targets.size == 0:
        raise ValueError("no samples")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    targets = targets.astype(np.int64)
    preds = preds.astype(np.int64)
    for name, labels in (("targets", targets), ("preds", preds)):
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"{name} must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    return targets, preds


def _check_probs(probs: np.ndarray, targets: np.ndarray | None = None) -> np.ndarray:
    """Return probs as a float (N, K) array, or raise ValueError."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be 2-D (N, K), got shape {probs.shape}")
    if probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(f"probs is empty: shape {probs.shape}")
    if targets is not None and np.shape(targets) != (probs.shape[0],):
        raise ValueError(f"targets must have shape ({probs.shape[0]},), got {np.shape(targets)}")
    return probs


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise num / den, with 0 where den is 0 (scikit-learn's zero_division=0)."""
    num = num.astype(np.float64)
    den = den.astype(np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix."""
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, support)
    # 2tp / (2tp + fp + fn) is how scikit-learn defines F1, so 0/0 cases match it.
    f1 = _safe_divide(2 * tp, predicted + support)
    return precision, recall, f1, support


def confusion_matrix(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Count matrix of shape (K, K): rows are true classes, columns predicted classes."""
    targets, preds = _check_labels(targets, preds, num_classes)
    flat = np.bincount(targets * num_classes + preds, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def row_normalized(cm: np.ndarray) -> np.ndarray:
    """Each row of a confusion matrix as fractions of its true class, so classes of any size compare.

    Rows of classes without samples stay 0.
    """
    cm = np.asarray(cm)
    return _safe_divide(cm, np.broadcast_to(cm.sum(axis=1, keepdims=True), cm.shape))


def _micro(cm: np.ndarray) -> tuple[float, float, float]:
    """Micro precision, recall and F1 from pooled counts.

    For single-label data all three equal accuracy; they are computed, not aliased, so a bug elsewhere shows.
    """
    tp = float(np.trace(cm))
    precision = tp / float(cm.sum(axis=0).sum())
    recall = tp / float(cm.sum(axis=1).sum())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def log_loss(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean -log p(true class), clipped to [eps, 1 - eps] for probs' float type as scikit-learn's log_loss does.

    Unlike "loss" (clipped at 1e-12), this matches the number a scikit-learn user computes from the same arrays.
    """
    dtype = np.asarray(probs).dtype
    eps = np.finfo(dtype if np.issubdtype(dtype, np.floating) else np.float64).eps
    probs = _check_probs(probs, targets)
    targets, _ = _check_labels(targets, targets, probs.shape[1])
    target_probs = probs[np.arange(probs.shape[0]), targets]
    return float(-np.log(np.clip(target_probs, eps, 1 - eps)).mean())


def calibration_bins(
    probs: np.ndarray, targets: np.ndarray, num_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, accuracy and mean confidence (max probability) of each of num_bins equal-width bins (lo, hi].

    Empty bins have accuracy and confidence 0; the reliability diagram and ECE share these numbers.
    """
    probs = _check_probs(probs, targets)
    return confidence_bins(probs.max(axis=1), probs.argmax(axis=1) == np.asarray(targets), num_bins)


def confidence_bins(
    confidence: np.ndarray, correct: np.ndarray, num_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """calibration_bins from each sample's confidence (its max probability) and whether its prediction was right:
    what predictions.csv holds (the HTML report draws its diagram from it)."""
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct).astype(np.float64)
    inner_edges = np.linspace(0.0, 1.0, num_bins + 1)[1:-1]
    bins = np.searchsorted(inner_edges, confidence, side="left")
    counts = np.bincount(bins, minlength=num_bins)
    accuracy = _safe_divide(np.bincount(bins, weights=correct, minlength=num_bins), counts)
    mean_confidence = _safe_divide(np.bincount(bins, weights=confidence, minlength=num_bins), counts)
    return counts.astype(np.int64), accuracy, mean_confidence


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, num_bins: int = 15) -> float:
    """Sum over bins of |B|/N * |accuracy(B) - confidence(B)|: how far the max probability is from being a hit rate."""
    counts, accuracy, confidence = calibration_bins(probs, targets, num_bins)
    return float(np.dot(counts / counts.sum(), np.abs(accuracy - confidence)))


def most_confident_errors(probs: np.ndarray, targets: np.ndarray, limit: int = 32) -> np.ndarray:
    """Indices of up to limit misclassified samples, highest predicted probability first (ties by index).

    Confident mistakes are the ones most worth a look: label noise, ambiguous images, shortcuts.
    """
    probs = _check_probs(probs, targets)
    wrong = np.flatnonzero(probs.argmax(axis=1) != np.asarray(targets))
    order = np.argsort(-probs[wrong].max(axis=1), kind="stable")
    return wrong[order][:limit].astype(np.int64)


def topk_predictions(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k class indices (N, k) and their probabilities, most likely first; ties keep class order."""
    probs = _check_probs(probs)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, probs.shape[1])
    indices = np.argsort(-probs, axis=1, kind="stable")[:, :k].astype(np.int64)
    return indices, np.take_along_axis(probs, indices, axis=1)


def classification_metrics(
    probs: np.ndarray, targets: np.ndarray, topk: Sequence[int] = (5,)
) -> dict[str, float | int]:
    """Accuracy, top-k accuracy, micro/macro/weighted precision/recall/F1, NLL loss, log loss, ECE and sample count."""
    raw_probs = probs  # log_loss clips with the eps of the caller's float type
    probs = _check_probs(probs, targets)
    num_samples, num_classes = probs.shape
    targets = np.asarray(targets)
    preds = probs.argmax(axis=1)
    cm = confusion_matrix(targets, preds, num_classes)
    targets = targets.astype(np.int64)

    result: dict[str, float | int] = {"accuracy": float(np.trace(cm) / num_samples)}
    ranked = np.argsort(-probs, axis=1, kind="stable")
    for k in sorted(set(topk)):
        if 2 <= k <= num_classes:
            hits = (ranked[:, :k] == targets[:, None]).any(axis=1)
            result[f"top{k}_accuracy"] = float(hits.mean())

    precision, recall, f1, support = _per_class(cm)
    weights = support / support.sum()
    micro = _micro(cm)
    for i, (name, values) in enumerate((("precision", precision), ("recall", recall), ("f1", f1))):
        result[f"{name}_micro"] = micro[i]
        result[f"{name}_macro"] = float(values.mean())
        result[f"{name}_weighted"] = float(np.dot(values, weights))

    target_probs = probs[np.arange(num_samples), targets]
    result["loss"] = float(-np.log(np.clip(target_probs, _EPS, None)).mean())
    result["log_loss"] = log_loss(raw_probs, targets)
    result["ece"] = expected_calibration_error(probs, targets)
    result["num_samples"] = int(num_samples)
    return result


def per_class_rows(targets: np.ndarray, preds: np.ndarray, classes: Sequence[str]) -> list[dict]:
    """One row per class: class, precision, recall, f1, support and accuracy (= recall)."""
    cm = confusion_matrix(targets, preds, len(classes))
    precision, recall, f1, support = _per_class(cm)
    return [
        {
            "class": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "accuracy": float(recall[i]),
        }
        for i, name in enumerate(classes)
    ]
