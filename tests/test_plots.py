"""Tests for imgcls_cli.plots: the PNGs exist, are readable, non-blank and sensibly sized."""

import math
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest

from imgcls_cli.plots import plot_confusion_matrix, plot_curves


def _assert_valid_png(path: Path) -> np.ndarray:
    """Read the PNG back and check it is a sane, non-blank image with no temporary file left."""
    assert path.is_file()
    assert not path.with_name(path.name + ".tmp").exists()
    assert list(path.parent.glob("*.tmp")) == []
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    height, width = image.shape[:2]
    assert 300 <= height <= 4000 and 300 <= width <= 4000
    differs_from_background = (image != image[0, 0]).any(axis=-1)
    assert differs_from_background.mean() > 0.01
    return image


def _rows(num_epochs: int) -> list[dict]:
    """Epoch rows with losses falling and accuracies rising."""
    return [
        {
            "epoch": e,
            "train_loss": 2.0 / e,
            "val_loss": 2.2 / e,
            "train_accuracy": 1 - 0.5 / e,
            "val_accuracy": 1 - 0.6 / e,
        }
        for e in range(1, num_epochs + 1)
    ]


def test_plot_curves_writes_png(tmp_path):
    path = tmp_path / "nested" / "curves.png"
    plot_curves(_rows(5), path)
    image = _assert_valid_png(path)
    assert image.shape[1] > image.shape[0]


def test_plot_curves_accepts_missing_val_values(tmp_path):
    rows = _rows(4)
    rows[0].update(val_loss=None, val_accuracy=None)
    rows[1].update(val_loss="", val_accuracy="")
    rows[2].update(val_loss=math.nan, val_accuracy=math.nan)
    path = tmp_path / "curves.png"
    plot_curves(rows, path)
    _assert_valid_png(path)


def test_plot_curves_without_any_val(tmp_path):
    rows = [{"epoch": 1, "train_loss": 1.0, "val_loss": None, "train_accuracy": 0.4, "val_accuracy": None}]
    path = tmp_path / "curves.png"
    plot_curves(rows, path)
    _assert_valid_png(path)


@pytest.mark.parametrize("num_classes, normalize", [(3, False), (10, True), (100, False)])
def test_plot_confusion_matrix_writes_png(tmp_path, num_classes, normalize):
    rng = np.random.default_rng(num_classes)
    cm = rng.integers(0, 20, size=(num_classes, num_classes)) + np.eye(num_classes, dtype=int) * 50
    classes = [f"class_{i}" for i in range(num_classes)]
    path = tmp_path / "out" / "cm.png"
    plot_confusion_matrix(cm, classes, path, normalize=normalize)
    _assert_valid_png(path)


def test_plot_confusion_matrix_grows_with_classes(tmp_path):
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    plot_confusion_matrix(np.eye(3, dtype=int), ["a", "b", "c"], small)
    plot_confusion_matrix(np.eye(15, dtype=int), [str(i) for i in range(15)], large)
    assert mpimg.imread(large).shape[0] > mpimg.imread(small).shape[0]


def test_plot_confusion_matrix_normalize_handles_empty_rows(tmp_path):
    cm = np.array([[5, 1, 0], [0, 0, 0], [2, 0, 3]])
    path = tmp_path / "cm.png"
    plot_confusion_matrix(cm, ["a", "b", "c"], path, normalize=True, title="Normalized")
    _assert_valid_png(path)


def test_plot_overwrites_existing_file(tmp_path):
    path = tmp_path / "cm.png"
    path.write_bytes(b"old")
    plot_confusion_matrix(np.eye(3, dtype=int), ["a", "b", "c"], path)
    _assert_valid_png(path)


def test_plots_close_their_figures(tmp_path):
    before = len(plt.get_fignums())
    plot_curves(_rows(2), tmp_path / "curves.png")
    plot_confusion_matrix(np.eye(3, dtype=int), ["a", "b", "c"], tmp_path / "cm.png")
    assert len(plt.get_fignums()) == before


def test_plot_confusion_matrix_rejects_mismatched_classes(tmp_path):
    with pytest.raises(ValueError):
        plot_confusion_matrix(np.eye(3, dtype=int), ["a", "b"], tmp_path / "cm.png")
    assert list(tmp_path.iterdir()) == []
