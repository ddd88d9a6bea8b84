"""Tests for imgcls_cli.metrics, checked against hand computations and scikit-learn."""

import csv
import math

import cv2
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, precision_score, recall_score
from sklearn.metrics import classification_report as sklearn_classification_report
from sklearn.metrics import f1_score as sklearn_f1_score
from sklearn.metrics import log_loss as sklearn_log_loss

from imgcls_cli.engine.reports import write_eval_reports
from imgcls_cli.metrics import (
    calibration_bins,
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    log_loss,
    most_confident_errors,
    per_class_rows,
    row_normalized,
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
        "precision_micro", "recall_micro", "f1_micro",
        "precision_macro", "recall_macro", "f1_macro",
        "precision_weighted", "recall_weighted", "f1_weighted",
        "loss", "log_loss", "ece", "num_samples",
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


@pytest.mark.parametrize("seed", [0, 1])
def test_micro_averages_and_log_loss_match_sklearn(seed):
    probs, targets = _random_case(seed)  # class 0 gets ~1e-22: log loss depends on the clipping
    preds = probs.argmax(axis=1)
    labels = list(range(probs.shape[1]))
    result = classification_metrics(probs, targets)
    assert result["precision_micro"] == pytest.approx(precision_score(targets, preds, labels=labels, average="micro"))
    assert result["recall_micro"] == pytest.approx(recall_score(targets, preds, labels=labels, average="micro"))
    assert result["f1_micro"] == pytest.approx(sklearn_f1_score(targets, preds, labels=labels, average="micro"))
    assert result["f1_micro"] == pytest.approx(result["accuracy"])
    assert result["log_loss"] == pytest.approx(sklearn_log_loss(targets, probs, labels=labels), rel=1e-12)
    assert result["log_loss"] > result["loss"]  # float64 eps (2.2e-16) clips lower than "loss"'s 1e-12


def test_log_loss_clips_with_the_eps_of_the_input_float_type():
    probs, targets = _random_case(3)
    probs32 = probs.astype(np.float32)
    labels = list(range(probs.shape[1]))
    assert log_loss(probs32, targets) == pytest.approx(sklearn_log_loss(targets, probs32, labels=labels), rel=1e-6)
    assert log_loss(probs32, targets) < log_loss(probs, targets)
    with pytest.raises(ValueError):
        log_loss(probs, targets + 10)


def _ece_case() -> tuple[np.ndarray, np.ndarray]:
    """Four samples in three of the 15 bins of width 1/15 (upper edges 0.6, 0.9333, 1.0)."""
    probs = np.array([
        [0.90, 0.10],  # conf 0.90, right -> bin 13 (0.8667, 0.9333]
        [0.95, 0.05],  # conf 0.95, wrong -> bin 14 (0.9333, 1]
        [0.42, 0.58],  # conf 0.58, right -> bin 8 (0.5333, 0.6]
        [0.45, 0.55],  # conf 0.55, wrong -> bin 8
    ])
    return probs, np.array([0, 1, 1, 0])


def test_ece_on_hand_computed_case():
    probs, targets = _ece_case()
    counts, accuracy, confidence = calibration_bins(probs, targets)
    assert counts.tolist() == [0] * 8 + [2, 0, 0, 0, 0, 1, 1]
    np.testing.assert_allclose(accuracy[[8, 13, 14]], [0.5, 1.0, 0.0])
    np.testing.assert_allclose(confidence[[8, 13, 14]], [0.565, 0.90, 0.95])
    # 2/4 * |0.5 - 0.565| + 1/4 * |1 - 0.9| + 1/4 * |0 - 0.95| = 0.0325 + 0.025 + 0.2375
    assert expected_calibration_error(probs, targets) == pytest.approx(0.295)
    assert classification_metrics(probs, targets)["ece"] == pytest.approx(0.295)


def test_ece_is_zero_when_confidence_equals_hit_rate():
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert expected_calibration_error(probs, np.array([0, 1, 0])) == 0.0


def test_row_normalized_rows_sum_to_one_or_zero():
    cm = np.array([[3, 1, 0], [0, 0, 0], [1, 1, 2]])
    normalized = row_normalized(cm)
    np.testing.assert_allclose(normalized, [[0.75, 0.25, 0], [0, 0, 0], [0.25, 0.25, 0.5]])


def test_most_confident_errors_orders_by_predicted_probability():
    probs = np.array([[0.6, 0.4], [0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.9, 0.1]])
    targets = np.array([1, 1, 1, 0, 1])
    np.testing.assert_array_equal(most_confident_errors(probs, targets), [1, 4, 0])
    np.testing.assert_array_equal(most_confident_errors(probs, targets, limit=1), [1])


# write_eval_reports: the new files. One report directory is shared, the figures cost ~1 s to draw.
CLASSES = ["cat", "dog", "bird", "fish"]  # "fish" has no samples
REPORT_TARGETS = np.array([0, 0, 1, 2, 2, 2, 1, 0])
REPORT_PREDS = np.array([0, 1, 1, 2, 0, 2, 1, 0])


def _probs_predicting(preds: np.ndarray, num_classes: int, top: float = 0.7) -> np.ndarray:
    """Probabilities with `top` on each predicted class and the rest spread evenly."""
    probs = np.full((len(preds), num_classes), (1 - top) / (num_classes - 1))
    probs[np.arange(len(preds)), preds] = top
    return probs


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    probs = _probs_predicting(REPORT_PREDS, len(CLASSES))
    probs[4] = [0.8, 0.1, 0.05, 0.05]  # bird predicted cat at 0.8: the most confident error
    images = np.random.default_rng(0).integers(0, 256, size=(len(probs), 3, 24, 24), dtype=np.uint8)
    ids = [str(i) for i in range(len(probs))]
    write_eval_reports(out, probs, REPORT_TARGETS, CLASSES, ids, "index", 2, images=images)
    return out


def _read_rows(path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_normalized_confusion_csv_rows_are_true_classes(report_dir):
    rows = _read_rows(report_dir / "confusion_matrix_normalized.csv")
    assert rows[0][0].startswith("true \\ predicted") and rows[0][1:] == CLASSES
    assert [row[0] for row in rows[1:]] == CLASSES
    values = np.array([[float(v) for v in row[1:]] for row in rows[1:]])
    # cat: 2 of 3 right, 1 taken for dog; bird: 1 taken for cat, 2 right; fish: no samples.
    np.testing.assert_allclose(values[0], [2 / 3, 1 / 3, 0, 0], atol=1e-6)
    np.testing.assert_allclose(values[2], [1 / 3, 0, 2 / 3, 0], atol=1e-6)
    np.testing.assert_allclose(values.sum(axis=1), [1, 1, 1, 0], atol=1e-5)


def test_classification_report_matches_sklearn_and_per_class_csv(report_dir):
    text = (report_dir / "classification_report.txt").read_text()
    expected = sklearn_classification_report(
        REPORT_TARGETS, REPORT_PREDS, labels=list(range(len(CLASSES))), target_names=CLASSES, digits=4,
        zero_division=0,
    )
    assert text == expected
    with open(report_dir / "per_class.csv", newline="") as f:
        dog = next(row for row in csv.DictReader(f) if row["class"] == "dog")
    line = next(line.split() for line in text.splitlines() if line.split()[:1] == ["dog"])
    assert [float(v) for v in line[1:4]] == pytest.approx(
        [float(dog["precision"]), float(dog["recall"]), float(dog["f1"])], abs=5e-5)
    assert int(line[4]) == int(dog["support"]) == 2


@pytest.mark.parametrize("name", ["reliability.png", "misclassified.png", "confusion_matrix.png"])
def test_report_figures_are_valid_pngs(report_dir, name):
    path = report_dir / name
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(path))
    assert image is not None
    assert all(100 <= side <= 4000 for side in image.shape[:2]), image.shape
    assert image.std() > 1  # not blank
    assert not list(report_dir.glob("*.tmp")) and not list(report_dir.glob(".*.tmp"))


def test_metrics_json_has_the_new_keys(report_dir):
    import json

    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert {"precision_micro", "recall_micro", "f1_micro", "log_loss", "ece"} <= set(metrics)
    assert metrics["f1_micro"] == pytest.approx(metrics["accuracy"]) == pytest.approx(6 / 8)


def test_misclassified_png_only_with_images_and_errors(tmp_path):
    probs = _probs_predicting(REPORT_TARGETS, len(CLASSES))  # every prediction right
    ids = [str(i) for i in range(len(probs))]
    images = np.random.default_rng(1).normal(size=(len(probs), 1, 16, 16))  # normalized floats, 1 channel
    write_eval_reports(tmp_path / "right", probs, REPORT_TARGETS, CLASSES, ids, "index", 1, images=images)
    assert not (tmp_path / "right" / "misclassified.png").exists()
    assert (tmp_path / "right" / "reliability.png").is_file()

    wrong = _probs_predicting(REPORT_PREDS, len(CLASSES))
    write_eval_reports(tmp_path / "no_images", wrong, REPORT_TARGETS, CLASSES, ids, "index", 1)
    assert not (tmp_path / "no_images" / "misclassified.png").exists()
    write_eval_reports(tmp_path / "floats", wrong, REPORT_TARGETS, CLASSES, ids, "index", 1, images=images)
    assert cv2.imread(str(tmp_path / "floats" / "misclassified.png")).std() > 1
    with pytest.raises(ValueError):
        write_eval_reports(tmp_path / "bad", wrong, REPORT_TARGETS, CLASSES, ids, "index", 1, images=images[:3])
