"""Tests for imgcls_cli.metrics, checked against hand computations and scikit-learn."""

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from imgcls_cli.metrics import (
    classification_metrics,
    confusion_matrix,
    per_class_rows,
    topk_predictions,
)


def _random_case(seed: int, num_samples: int = 200, num_classes: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Random probabilities and targets where class 0 is never predicted and the last class never occurs."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(num_samples, num_classes)) * 2
    logits[:, 0] = -50.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    targets = rng.integers(0, num_classes - 1, size=num_samples)
    return probs, targets


def test_confusion_matrix_rows_are_true_columns_are_predicted():
    targets = np.array([0, 0, 1, 2, 2, 2])
    preds = np.array([0, 1, 1, 2, 0, 2])
    cm = confusion_matrix(targets, preds, 3)
    expected = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64
    assert cm.sum() == len(targets)


def test_confusion_matrix_keeps_unseen_classes():
    cm = confusion_matrix(np.array([1, 1]), np.array([1, 0]), 4)
    assert cm.shape == (4, 4)
    assert cm[1, 1] == 1 and cm[1, 0] == 1 and cm.sum() == 2


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_classification_metrics_match_sklearn(seed):
    probs, targets = _random_case(seed)
    num_classes = probs.shape[1]
    preds = probs.argmax(axis=1)
    assert 0 not in preds and num_classes - 1 not in targets

    result = classification_metrics(probs, targets)
    labels = list(range(num_classes))
    assert result["accuracy"] == pytest.approx(accuracy_score(targets, preds))
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            targets, preds, labels=labels, average=average, zero_division=0
        )
        assert result[f"precision_{average}"] == pytest.approx(p)
        assert result[f"recall_{average}"] == pytest.approx(r)
        assert result[f"f1_{average}"] == pytest.approx(f)
    assert result["num_samples"] == len(targets)


def test_classification_metrics_keys_and_plain_python_types():
    probs, targets = _random_case(0, num_classes=6)
    result = classification_metrics(probs, targets, topk=(1, 3, 5, 10))
    assert set(result) == {
        "accuracy", "top3_accuracy", "top5_accuracy",
        "precision_macro", "recall_macro", "f1_macro",
        "precision_weighted", "recall_weighted", "f1_weighted",
        "loss", "num_samples",
    }
    assert type(result["num_samples"]) is int
    assert all(type(v) is float for k, v in result.items() if k != "num_samples")


def test_topk_accuracy_on_hand_made_case():
    probs = np.array([
        [0.5, 0.3, 0.2, 0.0],  # target 1: 2nd
        [0.1, 0.2, 0.3, 0.4],  # target 0: 4th
        [0.2, 0.5, 0.3, 0.0],  # target 2: 2nd
        [0.7, 0.1, 0.1, 0.1],  # target 0: 1st
    ])
    targets = np.array([1, 0, 2, 0])
    result = classification_metrics(probs, targets, topk=(2, 3))
    assert result["accuracy"] == pytest.approx(0.25)
    assert result["top2_accuracy"] == pytest.approx(0.75)
    assert result["top3_accuracy"] == pytest.approx(0.75)


def test_topk_accuracy_ties_break_towards_lower_class_index():
    probs = np.full((2, 4), 0.25)
    result = classification_metrics(probs, np.array([1, 3]), topk=(2,))
    assert result["accuracy"] == 0.0
    assert result["top2_accuracy"] == pytest.approx(0.5)


def test_loss_is_mean_negative_log_likelihood_with_clipping():
    probs = np.array([[0.8, 0.2], [0.4, 0.6], [1.0, 0.0]])
    targets = np.array([0, 0, 1])
    expected = -(math.log(0.8) + math.log(0.4) + math.log(1e-12)) / 3
    assert classification_metrics(probs, targets)["loss"] == pytest.approx(expected)


def test_per_class_rows_match_sklearn():
    probs, targets = _random_case(7)
    preds = probs.argmax(axis=1)
    classes = [f"c{i}" for i in range(probs.shape[1])]
    rows = per_class_rows(targets, preds, classes)
    p, r, f, s = precision_recall_fscore_support(
        targets, preds, labels=list(range(len(classes))), zero_division=0
    )
    assert [row["class"] for row in rows] == classes
    np.testing.assert_allclose([row["precision"] for row in rows], p)
    np.testing.assert_allclose([row["recall"] for row in rows], r)
    np.testing.assert_allclose([row["f1"] for row in rows], f)
    np.testing.assert_array_equal([row["support"] for row in rows], s)
    np.testing.assert_allclose([row["accuracy"] for row in rows], r)
    assert all(type(row["support"]) is int for row in rows)


def test_topk_predictions_sorted_descending_with_stable_ties():
    probs = np.array([[0.1, 0.4, 0.2, 0.3], [0.3, 0.2, 0.3, 0.2]])
    indices, values = topk_predictions(probs, 3)
    np.testing.assert_array_equal(indices, [[1, 3, 2], [0, 2, 1]])
    np.testing.assert_allclose(values, [[0.4, 0.3, 0.2], [0.3, 0.3, 0.2]])
    assert indices.dtype == np.int64


def test_topk_predictions_clips_k_to_number_of_classes():
    indices, values = topk_predictions(np.array([[0.7, 0.3]]), 5)
    assert indices.shape == values.shape == (1, 2)
    np.testing.assert_array_equal(indices, [[0, 1]])


@pytest.mark.parametrize(
    "call",
    [
        lambda: confusion_matrix(np.array([0, 1]), np.array([0]), 2),
        lambda: confusion_matrix(np.array([], dtype=int), np.array([], dtype=int), 2),
        lambda: confusion_matrix(np.array([0, 3]), np.array([0, 1]), 2),
        lambda: classification_metrics(np.full((3, 2), 0.5), np.array([0, 1])),
        lambda: classification_metrics(np.array([0.5, 0.5]), np.array([0])),
        lambda: classification_metrics(np.zeros((0, 3)), np.zeros(0, dtype=int)),
        lambda: per_class_rows(np.array([0, 1, 1]), np.array([0, 1]), ["a", "b"]),
        lambda: topk_predictions(np.array([0.2, 0.8]), 1),
    ],
)
def test_bad_shapes_raise_value_error(call):
    with pytest.raises(ValueError):
        call()
