"""Tests for imgcls_cli.plots and imgcls_cli.sweep_plot: the PNGs exist, are readable, non-blank and sensibly
sized; and what a reader sees in them: the best epoch marked, whole epochs on the axis, a sweep's jobs numbered
with a table of their values clear of the panels, accuracy and confidence told apart, titles that say what they
show and fit above their images. The figures are drawn in this process (no training): seconds in all."""

import json
import math
import re
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from imgcls_cli.commands.sweep import collect, compare_jobs, override_values, write_compare
from imgcls_cli.engine.predict import predictions_figure
from imgcls_cli.engine.reports import misclassified_figure, write_misclassified
from imgcls_cli.plots import curves_figure, plot_confusion_matrix, plot_curves, reliability_figure, shorten
from imgcls_cli.sweep_plot import SweepJob, compare_figure


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


# ============================================================================================ what a reader sees
@pytest.fixture
def drawn():
    """Draw a figure and hand back its renderer (for window extents); every figure is closed afterwards."""
    figures = []

    def draw(fig):
        figures.append(fig)
        fig.canvas.draw()
        return fig.canvas.get_renderer()

    yield draw
    for fig in figures:
        plt.close(fig)


def _lines_labelled(ax, prefix: str) -> list[Line2D]:
    return [line for line in ax.get_lines() if line.get_label().startswith(prefix)]


def _visible_tick_labels(ax) -> list[Text]:
    low, high = sorted(ax.get_xlim())
    return [label for tick, label in zip(ax.get_xticks(), ax.get_xticklabels())
            if low <= tick <= high and label.get_text()]


@pytest.mark.parametrize("num_epochs, best", [(3, 2), (12, 7), (1, 1)])
def test_curves_mark_the_best_epoch_on_every_panel_with_whole_epoch_ticks(drawn, num_epochs, best):
    fig = curves_figure(_rows(num_epochs), best_epoch=best)
    drawn(fig)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        marks = _lines_labelled(ax, "best epoch")
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [best, best]
        assert str(best) in marks[0].get_label()
        assert marks[0].get_label() in [t.get_text() for t in ax.get_legend().get_texts()]
        labels = _visible_tick_labels(ax)
        assert labels and all(re.fullmatch(r"\d+", t.get_text()) for t in labels), [t.get_text() for t in labels]
        assert {int(t.get_text()) for t in labels} <= set(range(1, num_epochs + 1))
    # The star sits on the val accuracy of that epoch.
    star = [line for line in fig.axes[1].get_lines() if line.get_marker() == "*"]
    assert len(star) == 1 and star[0].get_ydata()[0] == pytest.approx(_rows(num_epochs)[best - 1]["val_accuracy"])


def test_curves_without_a_best_epoch_have_no_mark(drawn):
    for best in (None, 0, 99):  # no val (no best yet), or an epoch not in the rows
        fig = curves_figure(_rows(3), best_epoch=best)
        drawn(fig)
        assert not any(_lines_labelled(ax, "best epoch") for ax in fig.axes)


OPTUNA_VALUES = [  # what summary.csv's overrides hold for an Optuna trial: full-precision floats
    {"optimizer.lr": "0.004430375245218269", "optimizer.weight_decay": "0.0007151893663724195",
     "label_smoothing": "0.12055267521432877"},
    {"optimizer.lr": "0.004311710058685493", "optimizer.weight_decay": "0.0004236547993389047",
     "label_smoothing": "0.12917882261333122"},
    {"optimizer.lr": "0.002054762512591136", "optimizer.weight_decay": "0.0008917730007820798",
     "label_smoothing": "0.19273255210020587"},
    {"optimizer.lr": "1.4135935551752314e-05", "optimizer.weight_decay": "0.0",
     "label_smoothing": "0.1057789839505809"},
]
ROUNDED = [["0.00443", "0.000715", "0.121"], ["0.00431", "0.000424", "0.129"], ["0.00205", "0.000892", "0.193"],
           ["1.41e-05", "0", "0.106"]]


def _epochs(num_epochs: int, shift: float) -> list[dict]:
    return [{"epoch": e, "val_accuracy": 1 - 0.5 / e - shift, "train_loss": 2 / e + shift}
            for e in range(1, num_epochs + 1)]


def _table_rows(fig) -> list[list[str]]:
    """The text of every row of the figure's tables (header rows included), block after block."""
    rows = []
    for ax in fig.axes:
        for table in ax.tables:
            cells = table.get_celld()
            for r in range(max(r for r, _ in cells) + 1):
                rows.append([cells[r, c].get_text().get_text() for c in range(max(c for _, c in cells) + 1)])
    return rows


def _assert_readable_compare(fig, renderer) -> None:
    """The tables clear of every panel (tick labels and titles included), each cell's text inside its cell, the
    bars' job numbers apart from each other, and no full-precision float anywhere."""
    panels = [ax for ax in fig.axes if not ax.tables]
    tables = [table for ax in fig.axes for table in ax.tables]
    assert len(panels) == 3 and tables
    assert all(ax.get_legend() is None for ax in panels)  # nothing drawn over the curves
    for item in [*tables, *fig.texts]:  # the table's blocks and its caption
        box = item.get_window_extent(renderer)
        for ax in panels:
            assert not box.overlaps(ax.get_tightbbox(renderer)), (ax.get_title(), box, ax.get_tightbbox(renderer))
    for table in tables:
        for cell in table.get_celld().values():
            text, frame = cell.get_text().get_window_extent(renderer), cell.get_window_extent(renderer)
            assert frame.x0 <= text.x0 and text.x1 <= frame.x1, cell.get_text().get_text()
    bar_labels = [t.get_window_extent(renderer) for t in _visible_tick_labels(panels[2])]
    assert all(a.x1 < b.x0 for a, b in zip(bar_labels, bar_labels[1:]))  # side by side, not overlapping
    assert not [t.get_text() for t in fig.findobj(Text) if re.search(r"\d\.\d{7,}", t.get_text())]


def test_compare_of_an_optuna_sweep_numbers_its_jobs_with_a_table_of_rounded_values(drawn):
    jobs = [SweepJob(str(j), _epochs(3, 0.05 * j), values, 0.8 - 0.1 * j, 0.79 - 0.1 * j)
            for j, values in enumerate(OPTUNA_VALUES)]
    fig = compare_figure(jobs)
    renderer = drawn(fig)
    _assert_readable_compare(fig, renderer)
    header, *rows = _table_rows(fig)
    assert header == ["job", "optimizer.lr", "optimizer.weight_decay", "label_smoothing", "best val acc", "test acc"]
    assert rows == [[str(j), *ROUNDED[j], f"{0.8 - 0.1 * j:.3f}", f"{0.79 - 0.1 * j:.3f}"] for j in range(4)]
    acc_ax, loss_ax, bar_ax = fig.axes[:3]
    assert [t.get_text() for t in bar_ax.get_xticklabels()] == ["0", "1", "2", "3"]
    # A job is one colour throughout: its line, its bar and its table cell.
    cells = next(ax for ax in fig.axes if ax.tables).tables[0].get_celld()
    for j, (line, bar) in enumerate(zip(acc_ax.get_lines(), bar_ax.patches)):
        assert line.get_color() == loss_ax.get_lines()[j].get_color()
        assert tuple(bar.get_facecolor()[:3]) == pytest.approx(cells[j + 1, 0].get_facecolor()[:3])
        assert tuple(bar.get_facecolor()[:3]) == pytest.approx(plt.matplotlib.colors.to_rgb(line.get_color()))
    for ax in (acc_ax, loss_ax):
        assert all(re.fullmatch(r"\d+", t.get_text()) for t in _visible_tick_labels(ax))


@pytest.mark.parametrize("num_jobs", [12, 30])
def test_compare_of_a_large_grid_sweep_stays_readable(drawn, num_jobs):
    schedules = ["step", "cosine", "onecycle"]
    jobs = [SweepJob(str(j), _epochs(5, 0.01 * j), {"schedule": schedules[j % 3], "seed": str(j // 3),
                                                     "optimizer.lr": f"{0.1 / (j + 1)}"}, 0.8, None)
            for j in range(num_jobs)]
    fig = compare_figure(jobs)
    renderer = drawn(fig)
    _assert_readable_compare(fig, renderer)
    rows = [row for row in _table_rows(fig) if row[0] != "job"]
    assert [row[0] for row in rows] == [str(j) for j in range(num_jobs)]  # every job once, in order
    assert rows[11][1:] == ["onecycle", "3", "0.00833", "0.800", "–"]  # 0.1/12; no test accuracy: a dash
    colors = {tuple(cell.get_facecolor()) for ax in fig.axes for table in ax.tables
              for (r, c), cell in table.get_celld().items() if r > 0 and c == 0}
    assert len(colors) == num_jobs  # a colour each
    width, height = fig.get_size_inches() * fig.dpi
    assert width <= 4000 and height <= 4000


def _fake_sweep(root: Path, overrides: list[list[str]]) -> Path:
    """A sweep folder as Hydra and imgcls leave it: per job .hydra/overrides.yaml, summary.json, metrics.csv."""
    for j, job_overrides in enumerate(overrides):
        job = root / f"{j}_job"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in job_overrides))
        (job / "summary.json").write_text(json.dumps({"status": "completed", "best_val_accuracy": 0.7,
                                                      "test_accuracy": 0.6 + 0.1 * j, "wall_seconds": 1.0}))
        (job / "metrics.csv").write_text("epoch,train_loss,val_accuracy\n1,1.5,0.5\n2,1.2,0.7\n")
    return root


def test_sweep_compare_shows_only_the_overrides_that_differ(tmp_path, drawn):
    fixed = ["hparams_search=optuna", "model.widths=[8,16,16]", "epochs=2"]
    sweep = _fake_sweep(tmp_path, [[f"{k}={v}" for k, v in values.items()] + fixed for values in OPTUNA_VALUES[:3]])
    rows = collect(sweep)
    jobs = compare_jobs(sweep, rows)
    assert [job.job for job in jobs] == ["0", "1", "2"]
    assert [dict(job.values) for job in jobs] == OPTUNA_VALUES[:3]  # model.widths=[8,16,16] is one override, fixed
    assert [job.test_accuracy for job in jobs] == pytest.approx([0.6, 0.7, 0.8])
    write_compare(sweep, rows)
    _assert_valid_png(sweep / "compare.png")
    fig = compare_figure(jobs)
    drawn(fig)
    assert _table_rows(fig)[1][:4] == ["0", *ROUNDED[0]]


def test_override_values_split_at_top_level_commas():
    assert override_values("a=1,b=[2,3],+c={x:1,y:2},d") == {"a": "1", "b": "[2,3]", "+c": "{x:1,y:2}", "d": ""}


def test_reliability_tells_accuracy_from_confidence(drawn):
    counts = np.array([0, 0, 5, 40, 120, 0, 300, 1200, 25_000, 0])
    accuracy = np.array([0, 0, 0.6, 0.5, 0.55, 0, 0.62, 0.8, 0.97, 0])
    confidence = np.array([0, 0, 0.25, 0.35, 0.46, 0, 0.66, 0.74, 0.95, 0])
    fig = reliability_figure(counts, accuracy, confidence, 0.0312)
    renderer = drawn(fig)
    rel_ax, hist_ax = fig.axes
    assert "ECE = 0.0312" in rel_ax.get_title()
    legend = rel_ax.get_legend()
    entries = dict(zip((t.get_text() for t in legend.get_texts()), legend.legend_handles))
    accuracy_entry = [h for text, h in entries.items() if text.startswith("accuracy")]
    confidence_entry = [h for text, h in entries.items() if text.startswith("mean confidence")]
    gap_entry = [text for text in entries if text.startswith("gap") and "ECE" in text]
    assert len(accuracy_entry) == len(confidence_entry) == len(gap_entry) == 1
    assert isinstance(accuracy_entry[0], Rectangle) and isinstance(confidence_entry[0], Line2D)
    assert confidence_entry[0].get_marker() not in (None, "None", "") and confidence_entry[0].get_linestyle() == "None"
    assert not legend.get_window_extent(renderer).overlaps(rel_ax.get_window_extent(renderer))
    # Accuracy: the bars' heights; confidence: the markers' heights, on the same 0-1 axis; the gap joins them.
    filled = counts > 0
    assert sorted(p.get_height() for p in rel_ax.patches) == pytest.approx(sorted(accuracy[filled]))
    markers = [line for line in rel_ax.get_lines() if line.get_label().startswith("mean confidence")]
    assert list(markers[0].get_ydata()) == pytest.approx(confidence[filled])
    gaps = [c for c in rel_ax.collections if isinstance(c, LineCollection)][0].get_segments()
    assert [(a[1], b[1]) for a, b in gaps] == [pytest.approx(pair) for pair in zip(accuracy[filled],
                                                                                    confidence[filled])]
    # The count of every non-empty bin is written on its bar.
    assert [t.get_text() for t in hist_ax.texts] == ["5", "40", "120", "300", "1200", "25.0k"]


def _assert_titles_fit(fig, renderer, titles: list[str]) -> list[Text]:
    """Each title inside its own column of the grid, apart from the others and from the figure's title."""
    ax = fig.axes[0]
    texts = [t for t in ax.texts]
    assert [t.get_text() for t in texts] == titles
    boxes = [t.get_window_extent(renderer) for t in texts]
    columns = min(8, len(texts))
    pitch = ax.get_window_extent(renderer).width / columns
    for box in boxes:
        assert box.width < pitch * 0.95
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b)
    heading = [t for t in fig.findobj(Text) if t.get_text() and t.get_text() == fig.get_suptitle()]
    assert len(heading) == 1
    assert not any(heading[0].get_window_extent(renderer).overlaps(box) for box in boxes)
    return texts


def test_misclassified_says_true_then_predicted(drawn, tmp_path):
    classes = ["cat", "dog", "a_class_with_a_very_long_folder_name", "bird"]
    targets = np.array([0, 1, 2, 3, 0, 2])
    probs = np.array([[0.1, 0.9, 0, 0], [0, 1, 0, 0], [0, 0.05, 0.05, 0.9], [0.6, 0, 0, 0.4],
                      [1, 0, 0, 0], [0, 0, 1, 0]])
    images = np.random.default_rng(0).integers(0, 255, size=(6, 3, 16, 16), dtype=np.uint8)
    fig = misclassified_figure(images, probs, targets, classes)
    renderer = drawn(fig)
    heading = fig.get_suptitle()
    assert "true" in heading and "predicted" in heading and heading.index("true") < heading.index("→") < \
        heading.index("predicted")
    titles = ["cat → dog (0.90)", "a_cla…r_name → bird (0.90)", "bird → cat (0.60)"]  # most confident first
    _assert_titles_fit(fig, renderer, titles)
    write_misclassified(tmp_path / "misclassified.png", images, probs, targets, classes)
    assert mpimg.imread(tmp_path / "misclassified.png").shape[1] > 300
    assert misclassified_figure(images, np.eye(4)[[0, 1, 2, 3, 0, 2]], targets, classes) is None


def test_predictions_show_each_file_name_with_its_label(drawn):
    names = ["a.png", "IMG_2024_summer_holiday_at_the_lake_0042.jpeg", "x.jpg"]
    rows = [{"path": f"/data/photos/{name}", "label": label, "probability": p, "error": ""}
            for name, label, p in zip(names, ["cat", "dog", "a_label_far_too_long_to_fit_above_an_image"],
                                      [0.97, 0.5, 0.123])]
    images = list(np.random.default_rng(1).integers(0, 255, size=(3, 1, 28, 28), dtype=np.uint8))
    fig = predictions_figure(images, rows)
    renderer = drawn(fig)
    assert "file name" in fig.get_suptitle()
    texts = _assert_titles_fit(fig, renderer, ["a.png\ncat (0.97)", "IMG_2024_summe…_lake_0042.jpeg\ndog (0.50)",
                                               "x.jpg\na_label_far…ve_an_image (0.12)"])
    assert texts[1].get_text().split("\n")[0].endswith("_0042.jpeg")  # the end of a long name, where files differ
    assert all(len(line) <= 30 for t in texts for line in t.get_text().split("\n"))


def test_shorten_keeps_both_ends():
    assert shorten("short.png") == "short.png"
    cut = shorten("a" * 40 + "_0001.png", 20)
    assert len(cut) == 20 and cut.startswith("aaaa") and cut.endswith("_0001.png") and "…" in cut
