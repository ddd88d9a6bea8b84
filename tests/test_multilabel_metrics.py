"""Tests for imgcls_cli.multilabel's metrics, thresholds, figures and report files: every number against a tiny case
worked by hand (and against scikit-learn called directly), the edge cases (a label without positives, no label
predicted, one image, one label), what each figure draws, and that the written files agree with each other.
In-process, no training: seconds in all."""

import json
import math
import re
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.image import imread
from sklearn.metrics import average_precision_score, f1_score, multilabel_confusion_matrix, precision_recall_curve

from conftest import read_csv
from imgcls_cli.errors import UserError
from imgcls_cli.multilabel.metrics import (
    binary_cross_entropy,
    check_thresholds,
    multilabel_metrics,
    per_label_rows,
    predicted_sets,
    tune_thresholds,
)
from imgcls_cli.multilabel.plots import MAX_PANELS, ap_bars_figure, confusion_grid_figure, pr_curves_figure
from imgcls_cli.multilabel.report import json_safe, write_multilabel_reports

DOCS = Path(__file__).resolve().parents[1] / "docs" / "multilabel.md"

# The tiny case: 4 images x 3 labels (a, b, c).
TARGETS = np.array([[1, 0, 1],
                    [0, 1, 0],
                    [1, 1, 0],
                    [0, 0, 0]])
PROBS = np.array([[0.9, 0.1, 0.35],
                  [0.2, 0.8, 0.45],
                  [0.6, 0.4, 0.2],
                  [0.7, 0.3, 0.1]])
CLASSES = ["a", "b", "c"]


@pytest.fixture(autouse=True)
def _no_warnings():
    """No scikit-learn warning may reach a user's terminal: every test here fails on one."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield
    plt.close("all")


def _random_case(seed: int, num_samples: int = 120, num_labels: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Targets with ~30% positives (label 0 never present), probabilities that lean towards them."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((num_samples, num_labels)) < 0.3).astype(np.int64)
    targets[:, 0] = 0
    probs = np.clip(0.35 * targets + 0.65 * rng.random((num_samples, num_labels)), 0, 1)
    return probs, targets


# --------------------------------------------------------------------------------------------------- the metrics
def test_tiny_case_worked_by_hand():
    # At 0.5, predicted: a = [1,0,1,1] (tp 2, fp 1, fn 0), b = [0,1,0,0] (tp 1, fp 0, fn 1), c = [0,0,0,0]
    # (tp 0, fp 0, fn 1).
    # AP, ranking by score: a: 0.9 (+) 0.7 (-) 0.6 (+) 0.2 (-) -> (1/1 + 2/3) / 2 = 5/6; b: 0.8 (+) 0.4 (+) -> 1;
    # c: 0.45 (-) 0.35 (+) -> 1/2. Macro mAP = (5/6 + 1 + 1/2) / 3 = 7/9.
    # Micro AP over the 12 cells, by score: 0.9+ 0.8+ 0.7- 0.6+ 0.45- 0.4+ 0.35+ (then only negatives), 5 positives:
    # (1/1 + 2/2 + 3/4 + 4/6 + 5/7) / 5 = 347/420.
    # Micro: tp 3, fp 1, fn 2 -> P = 3/4, R = 3/5, F1 = 2*3 / (2*3 + 1 + 2) = 2/3.
    # Macro: P = (2/3 + 1 + 0) / 3 = 5/9 (c: 0/0 -> 0), R = (1 + 1/2 + 0) / 3 = 1/2, F1 = (4/5 + 2/3 + 0) / 3 = 22/45.
    # Hamming: wrong cells a@3 (fp), b@2 (fn), c@0 (fn) -> 3/12. Subset accuracy: only image 1 is exactly right: 1/4.
    # Cardinality: true (2 + 1 + 2 + 0) / 4 = 5/4; predicted 1 label on each image = 1.
    # Loss: the probability given to the truth of each cell: a 0.9 0.8 0.6 0.3, b 0.9 0.8 0.4 0.7, c 0.35 0.55 0.8 0.9.
    truth_probs = np.array([0.9, 0.8, 0.6, 0.3, 0.9, 0.8, 0.4, 0.7, 0.35, 0.55, 0.8, 0.9])
    m = multilabel_metrics(PROBS, TARGETS, np.full(3, 0.5))
    expected = {
        "map_macro": 7 / 9, "map_micro": 347 / 420, "map_macro_labels": 3,
        "f1_micro": 2 / 3, "f1_macro": 22 / 45, "precision_micro": 3 / 4, "precision_macro": 5 / 9,
        "recall_micro": 3 / 5, "recall_macro": 1 / 2, "hamming_loss": 3 / 12, "subset_accuracy": 1 / 4,
        "accuracy": 1 / 4, "label_cardinality_true": 5 / 4, "label_cardinality_predicted": 1.0,
        "loss": float(-np.log(truth_probs).mean()), "num_samples": 4, "num_labels": 3,
    }
    assert m.keys() == expected.keys()
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-12), key
    assert all(type(v) in (float, int) for v in m.values())  # JSON-ready
    json.dumps(m, allow_nan=False)

    rows = per_label_rows(PROBS, TARGETS, 0.5, CLASSES)
    assert [r["label"] for r in rows] == CLASSES
    assert [r["ap"] for r in rows] == pytest.approx([5 / 6, 1, 1 / 2])
    assert [r["precision"] for r in rows] == pytest.approx([2 / 3, 1, 0])
    assert [r["recall"] for r in rows] == pytest.approx([1, 1 / 2, 0])
    assert [r["f1"] for r in rows] == pytest.approx([4 / 5, 2 / 3, 0])
    assert [r["support"] for r in rows] == [2, 2, 1]
    assert [r["predicted"] for r in rows] == [3, 1, 0]
    assert [r["threshold"] for r in rows] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_are_scikit_learns(seed):
    probs, targets = _random_case(seed)
    thresholds = np.linspace(0.3, 0.7, probs.shape[1])
    preds = probs >= thresholds
    m = multilabel_metrics(probs, targets, thresholds)
    assert m["map_micro"] == pytest.approx(average_precision_score(targets, probs, average="micro"))
    # macro mAP: the labels with positives only (label 0 has none)
    assert m["map_macro"] == pytest.approx(average_precision_score(targets[:, 1:], probs[:, 1:], average="macro"))
    assert m["map_macro_labels"] == probs.shape[1] - 1
    for average in ("micro", "macro"):
        assert m[f"f1_{average}"] == pytest.approx(f1_score(targets, preds, average=average, zero_division=0))
    assert m["loss"] == pytest.approx(binary_cross_entropy(probs, targets))


def test_label_without_positives_is_left_out_of_macro_map_only():
    targets = TARGETS.copy()
    targets[:, 2] = 0  # label c never present
    m = multilabel_metrics(PROBS, targets, 0.5)
    rows = per_label_rows(PROBS, targets, 0.5, CLASSES)
    assert math.isnan(rows[2]["ap"]) and rows[2]["support"] == 0
    assert m["map_macro"] == pytest.approx((5 / 6 + 1) / 2)
    assert m["map_macro_labels"] == 2
    # macro F1 is scikit-learn's: every label, c's 0/0 scoring 0
    assert m["f1_macro"] == pytest.approx((4 / 5 + 2 / 3 + 0) / 3)


def test_no_label_predicted_and_no_label_present():
    m = multilabel_metrics(PROBS, TARGETS, 0.99)
    assert m["label_cardinality_predicted"] == 0
    assert m["precision_micro"] == m["recall_micro"] == m["f1_micro"] == m["f1_macro"] == 0.0
    assert m["hamming_loss"] == pytest.approx(5 / 12)  # every positive cell missed
    assert m["subset_accuracy"] == pytest.approx(1 / 4)  # image 3 has no label: the empty prediction is right
    assert m["map_macro"] == pytest.approx(7 / 9)  # ranking metrics do not depend on the thresholds

    empty = multilabel_metrics(PROBS, np.zeros_like(TARGETS), 0.99)
    assert math.isnan(empty["map_macro"]) and math.isnan(empty["map_micro"]) and empty["map_macro_labels"] == 0
    assert empty["subset_accuracy"] == 1.0 and empty["hamming_loss"] == 0.0


def test_one_image_and_one_label():
    one_row = multilabel_metrics(PROBS[:1], TARGETS[:1], 0.5)  # truth {a, c}, predicted {a}
    assert one_row["num_samples"] == 1
    assert one_row["subset_accuracy"] == 0.0 and one_row["hamming_loss"] == pytest.approx(1 / 3)
    assert one_row["f1_micro"] == pytest.approx(2 / 3) and one_row["map_macro"] == 1.0

    # one label is not scikit-learn's binary case with two classes: label a alone, as in the tiny case
    one_label = multilabel_metrics(PROBS[:, :1], TARGETS[:, :1], 0.5)
    assert one_label["f1_macro"] == one_label["f1_micro"] == pytest.approx(4 / 5)
    assert one_label["precision_macro"] == pytest.approx(2 / 3)
    assert one_label["map_macro"] == one_label["map_micro"] == pytest.approx(5 / 6)
    assert per_label_rows(PROBS[:, :1], TARGETS[:, :1], 0.5, ["a"])[0]["f1"] == pytest.approx(4 / 5)


def test_predicted_sets_include_a_probability_equal_to_its_threshold():
    sets = predicted_sets(np.array([[0.5, 0.49, 0.7]]), np.array([0.5, 0.5, 0.8]))
    assert sets.dtype == bool
    assert sets.tolist() == [[True, False, False]]


def test_loss_is_finite_at_saturated_probabilities_and_the_callers_loss_wins():
    probs = np.array([[1.0, 0.0]])
    assert math.isfinite(binary_cross_entropy(probs, np.array([[0, 1]])))
    assert binary_cross_entropy(probs, np.array([[1, 0]])) == pytest.approx(0.0, abs=1e-9)
    assert multilabel_metrics(PROBS, TARGETS, 0.5, loss=1.25)["loss"] == 1.25


@pytest.mark.parametrize("probs, targets, match", [
    (PROBS[:, :2], TARGETS, "shape"),
    (PROBS, TARGETS * 2, "multi-hot"),
    (PROBS + 1, TARGETS, r"\[0, 1\]"),
    (np.zeros((0, 3)), np.zeros((0, 3)), "non-empty"),
])
def test_bad_arrays_are_refused(probs, targets, match):
    with pytest.raises(ValueError, match=match):
        multilabel_metrics(probs, targets, 0.5)


# -------------------------------------------------------------------------------------------------- thresholds
def test_tuned_thresholds_worked_by_hand():
    # a: scores 0.9+ 0.7- 0.6+ 0.2-; F1 at each candidate: 2/3, 1/2, 4/5, 2/3 -> 0.6, midway to 0.2 below: 0.4.
    # b: 0.8+ 0.4+ 0.3- 0.1- -> F1 1 at 0.4, midway to 0.3: 0.35.
    # c: 0.45- 0.35+ 0.2- 0.1- -> F1 0, 2/3, 1/2, 2/5: 0.35, midway to 0.2: 0.275.
    thresholds = tune_thresholds(PROBS, TARGETS)
    assert thresholds == pytest.approx([0.4, 0.35, 0.275], abs=1e-12)
    assert thresholds.dtype == np.float64 and thresholds.shape == (3,)
    assert per_label_rows(PROBS, TARGETS, thresholds, CLASSES)[0]["f1"] == pytest.approx(4 / 5)


def test_tuned_threshold_ties_and_the_lowest_score():
    # F1 at 0.9, 0.7, 0.6, 0.5: 2/3, 1/2, 2/5, 2/3: a tie, won by the higher threshold (fewer predictions).
    tie = tune_thresholds(np.array([[0.9], [0.7], [0.6], [0.5]]), np.array([[1], [0], [0], [1]]))
    assert tie == pytest.approx([0.8])
    # predicting every image is best (F1 4/5 at 0.2): nothing below, so midway to 0.
    low = tune_thresholds(np.array([[0.5], [0.2], [0.3]]), np.array([[1], [1], [0]]))
    assert low == pytest.approx([0.1])


def test_labels_with_nothing_to_separate_keep_the_default():
    targets = TARGETS.copy()
    targets[:, 1] = 0
    targets[:, 2] = 1
    thresholds = tune_thresholds(PROBS, targets, default=0.3)
    assert thresholds[1] == 0.3 and thresholds[2] == 0.3 and thresholds[0] == pytest.approx(0.4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tuned_thresholds_maximize_f1_and_are_deterministic(seed):
    probs, targets = _random_case(seed)
    probs = np.round(probs, 2)  # ties between images, as calibrated outputs often have
    thresholds = tune_thresholds(probs, targets)
    assert np.array_equal(thresholds, tune_thresholds(probs, targets))
    tuned_f1 = [r["f1"] for r in per_label_rows(probs, targets, thresholds, list("abcdefg"))]
    for c in range(1, probs.shape[1]):
        _, _, candidates = precision_recall_curve(targets[:, c], probs[:, c])
        predicted = probs[:, c, None] >= candidates  # (N, candidates): predicting at each candidate
        tp = (predicted & (targets[:, c, None] == 1)).sum(axis=0)
        best = (2 * tp / (predicted.sum(axis=0) + targets[:, c].sum())).max()  # F1 = 2tp / (predicted + positives)
        assert tuned_f1[c] == pytest.approx(best, abs=1e-12)
        # strictly between two distinct scores: the margin on both sides
        assert not np.isclose(probs[:, c], thresholds[c]).any()


def test_check_thresholds_accepts_one_number_or_one_per_label():
    assert check_thresholds(0.5, 3).tolist() == [0.5, 0.5, 0.5]
    assert check_thresholds([0.2, 0.5, 0.9], 3).tolist() == [0.2, 0.5, 0.9]
    assert check_thresholds((0.2, np.float32(0.25)), 2).dtype == np.float64
    assert check_thresholds(np.array(0.3), 2).tolist() == [0.3, 0.3]
    assert check_thresholds(np.array([0.3, 0.4]), 2).tolist() == [0.3, 0.4]


@pytest.mark.parametrize("value, mention", [
    (0, "not 0"), (1.0, "not 1.0"), (-0.1, "not -0.1"), (float("nan"), "not nan"), (True, "not True"),
    ("0.5", "not '0.5'"), (None, "not None"), ([0.5, 0.5], "lists 2 values but there are 3 labels"),
    ([0.5, 2, 0.5], "threshold 2 of 3 must be a number in (0, 1), not 2"),
    ([0.5, 0.5, None], "threshold 3 of 3"), ({"a": 0.5}, "not {'a': 0.5}"),
])
def test_check_thresholds_refuses_in_one_line(value, mention):
    with pytest.raises(UserError) as info:
        check_thresholds(value, 3)
    message = str(info.value)
    assert "\n" not in message and mention in message and message.startswith("threshold")


# ----------------------------------------------------------------------------------------------------- figures
def _panels(fig) -> dict[str, list[int]]:
    """confusion_grid_figure's panels: each label's title and its four counts (tn, fp, fn, tp), in drawing order."""
    panels: dict[str, list[int]] = {}
    for text in fig.axes[0].texts:
        if text.get_gid() == "label":
            current = panels.setdefault(text.get_text(), [])
        elif text.get_gid() == "count":
            current.append(int(text.get_text()))
    return panels


def test_ap_bars_are_sorted_with_the_macro_map_line():
    probs, targets = _random_case(0)
    classes = [f"label {i}" for i in range(probs.shape[1])]
    rows = per_label_rows(probs, targets, 0.5, classes)
    fig = ap_bars_figure(rows)
    ax = fig.axes[0]
    widths = [bar.get_width() for bar in ax.patches]
    assert len(widths) == probs.shape[1] - 1  # label 0 has no positives: no bar
    assert widths == sorted(widths, reverse=True)
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names[0] == max((r for r in rows if r["label"] != "label 0"), key=lambda r: r["ap"])["label"]
    (line,) = [l for l in ax.get_lines() if l.get_label().startswith("macro mAP")]
    assert line.get_xdata()[0] == pytest.approx(multilabel_metrics(probs, targets, 0.5)["map_macro"])
    assert "1 without positives" in ax.get_title() and f"macro mAP = {line.get_xdata()[0]:.4f}" in ax.get_title()


def test_confusion_grid_has_a_panel_of_counts_per_label():
    thresholds = np.array([0.5, 0.5, 0.5])
    fig = confusion_grid_figure(PROBS, TARGETS, thresholds, CLASSES)
    panels = _panels(fig)
    assert list(panels) == CLASSES
    expected = multilabel_confusion_matrix(TARGETS, PROBS >= thresholds)  # [[tn, fp], [fn, tp]] per label
    assert list(panels.values()) == expected.reshape(3, 4).tolist()
    assert "3 labels" in fig._suptitle.get_text()


def test_confusion_grid_of_many_labels_shows_those_with_most_errors():
    rng = np.random.default_rng(0)
    num_labels = MAX_PANELS + 20
    targets = (rng.random((50, num_labels)) < 0.3).astype(int)
    probs = targets.astype(float)
    probs[:, :20] = 1 - probs[:, :20]  # labels 0-19: every cell wrong
    fig = confusion_grid_figure(probs, targets, 0.5, [f"l{i}" for i in range(num_labels)])
    titles = list(_panels(fig))
    assert len(titles) == MAX_PANELS and titles[:20] == [f"l{i}" for i in range(20)]
    assert f"{MAX_PANELS} of {num_labels} labels" in fig._suptitle.get_text()
    width, height = fig.get_size_inches() * fig.dpi
    assert width < 4000 and height < 4000


def test_pr_curves_of_the_worst_labels_with_their_thresholds_marked():
    probs, targets = _random_case(3, num_labels=9)
    classes = [f"label {i}" for i in range(9)]
    thresholds = tune_thresholds(probs, targets)
    rows = per_label_rows(probs, targets, thresholds, classes)
    worst = sorted((r for r in rows if not math.isnan(r["ap"])), key=lambda r: r["ap"])[:6]
    fig = pr_curves_figure(probs, targets, classes, thresholds=thresholds)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [f"{r['label']} (AP {r['ap']:.3f})" for r in worst]
    curves = [l for l in ax.get_lines() if l.get_linestyle() != "None"]
    dots = [l for l in ax.get_lines() if l.get_linestyle() == "None"]
    assert len(curves) == len(dots) == 6
    for dot, row in zip(dots, worst):
        assert (dot.get_xdata()[0], dot.get_ydata()[0]) == pytest.approx((row["recall"], row["precision"]))
    assert "lowest AP" in ax.get_title()

    unmarked = pr_curves_figure(probs, targets, classes, worst=2).axes[0]
    assert len(unmarked.get_lines()) == 2 and "threshold" not in unmarked.get_title()


# ------------------------------------------------------------------------------------------------- report files
def test_report_files_exist_and_agree(tmp_path):
    targets = TARGETS.copy()
    targets[:, 2] = 0  # label c without positives: its AP is null / empty
    out = tmp_path / "eval"
    thresholds = np.array([0.4, 0.35, 0.5])
    returned = write_multilabel_reports(out, PROBS, targets, thresholds, CLASSES, extra={"split": "test", "loss": 0.7})
    names = {"metrics.json", "per_label.csv", "multilabel_confusion.csv", "ap_per_label.png",
             "confusion_per_label.png", "pr_curves.png"}
    assert {p.name for p in out.iterdir()} == names  # no temporary file left
    for name in ("ap_per_label.png", "confusion_per_label.png", "pr_curves.png"):
        image = imread(out / name)
        assert image.shape[0] >= 200 and (image != image[0, 0]).any()

    def refuse(constant):
        raise AssertionError(f"metrics.json holds {constant}")

    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics == returned
    assert metrics["split"] == "test" and metrics["loss"] == 0.7  # extra is added and wins
    per_label = read_csv(out / "per_label.csv")
    confusion = read_csv(out / "multilabel_confusion.csv")
    assert [r["label"] for r in per_label] == [r["label"] for r in confusion] == CLASSES
    assert per_label[2]["ap"] == ""
    assert metrics["map_macro"] == pytest.approx(np.mean([float(r["ap"]) for r in per_label if r["ap"]]), abs=1e-6)
    assert metrics["f1_macro"] == pytest.approx(np.mean([float(r["f1"]) for r in per_label]), abs=1e-6)
    wrong = sum(int(r["fp"]) + int(r["fn"]) for r in confusion)
    assert metrics["hamming_loss"] == pytest.approx(wrong / targets.size)
    for row, counts in zip(per_label, confusion):
        assert int(counts["tp"]) + int(counts["fn"]) == int(row["support"])
        assert int(counts["tp"]) + int(counts["fp"]) == int(row["predicted"])
        assert sum(int(counts[k]) for k in ("tn", "fp", "fn", "tp")) == len(targets)
    assert [float(r["threshold"]) for r in per_label] == thresholds.tolist()


def test_json_safe_replaces_non_finite_numbers_at_any_depth():
    value = {"a": float("nan"), "b": [1.0, float("inf"), {"c": np.float32(0.5)}], "d": np.int64(3), "e": "x"}
    assert json_safe(value) == {"a": None, "b": [1.0, None, {"c": 0.5}], "d": 3, "e": "x"}
    assert type(json_safe(np.int64(3))) is int


def test_docs_example_runs_and_prints_what_the_page_shows(capsys):
    """The Python example of docs/multilabel.md runs, and prints the lines shown under it."""
    text = DOCS.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    shown = re.search(r"```text\n(.*?)```", text, re.S).group(1)
    exec(compile(code, str(DOCS), "exec"), {})
    assert capsys.readouterr().out == shown
