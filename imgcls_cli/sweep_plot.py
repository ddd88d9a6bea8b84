"""compare.png of a sweep: every job's validation accuracy and training loss per epoch and its test accuracy, with a
table of what differs between the jobs below the panels. Jobs are named by number, each in one colour throughout."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from imgcls_cli.plots import epoch_axis, save_figure, shorten, to_float

TABLE_FONT = 9
ROW_INCHES = 0.25  # a table row at 9 pt
PANELS_TOP, PANELS_BOTTOM, AXES_INCHES = 0.4, 0.8, 3.4  # the panels: title room, tick labels and xlabel, the axes
MAX_BLOCK_ROWS, MAX_BLOCKS = 12, 4  # a long table wraps into blocks side by side
BLOCK_GAP = 0.4
VALUE_CHARS = 20
_INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class SweepJob:
    """One job of a sweep as compare.png shows it. values: its overrides that differ between the jobs, as typed."""

    job: str
    rows: Sequence[Mapping[str, object]]  # metrics.csv
    values: Mapping[str, str] = field(default_factory=dict)
    best_val_accuracy: object = None
    test_accuracy: object = None


def short_value(value: object) -> str:
    """A table cell: a float to 3 significant digits (0.00443), an integer as it is, other text cut to fit."""
    text = str(value)
    if value is None or text == "":
        return "–"
    if not _INTEGER.fullmatch(text):
        try:
            return f"{float(text):.3g}"
        except ValueError:
            pass
    return shorten(text, VALUE_CHARS)


def job_colors(n: int) -> list[tuple[float, ...]]:
    """n distinct colours: the qualitative palettes up to 20 jobs, then evenly spaced along turbo."""
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(n)]
    return [plt.get_cmap("turbo")(x) for x in np.linspace(0.05, 0.95, n)]


def _table(jobs: Sequence[SweepJob]) -> tuple[list[str], list[list[str]]]:
    keys = list(dict.fromkeys(key for job in jobs for key in job.values))
    header = ["job", *(shorten(key, 2 * VALUE_CHARS) for key in keys), "best val acc", "test acc"]
    cells = [[job.job, *(short_value(job.values.get(key)) for key in keys),
              _accuracy(job.best_val_accuracy), _accuracy(job.test_accuracy)] for job in jobs]
    return header, cells


def _accuracy(value: object) -> str:
    """An accuracy with 3 decimals, as above the bars; "–" where the job has none."""
    number = to_float(value)
    return "–" if math.isnan(number) else f"{number:.3f}"


def _text_inches(text: str, weight: str = "normal") -> float:
    """The width of text at the table's font size, measured with the font itself."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    width, _, _ = text_to_path.get_text_width_height_descent(text, FontProperties(size=TABLE_FONT, weight=weight),
                                                            ismath=False)
    return width / 72


def _draw_panels(fig: Figure, jobs: Sequence[SweepJob], colors: list, bottom: float, top: float) -> None:
    acc_ax, loss_ax, bar_ax = fig.subplots(1, 3, gridspec_kw={"left": 0.05, "right": 0.98, "bottom": bottom,
                                                              "top": top, "wspace": 0.22})
    for job, color in zip(jobs, colors):
        epochs = [to_float(r.get("epoch")) for r in job.rows]
        acc_ax.plot(epochs, [to_float(r.get("val_accuracy")) for r in job.rows], color=color, marker="o",
                    markersize=3, label=f"job {job.job}")
        loss_ax.plot(epochs, [to_float(r.get("train_loss")) for r in job.rows], color=color, marker="o",
                     markersize=3, label=f"job {job.job}")
    for ax, title in ((acc_ax, "Validation accuracy"), (loss_ax, "Training loss")):
        ax.set_title(title)
        epoch_axis(ax)
    tests = np.array([to_float(job.test_accuracy) for job in jobs])
    positions = np.arange(len(jobs))
    bars = bar_ax.bar(positions, np.nan_to_num(tests), color=colors)
    if len(jobs) <= 10:  # beyond, the numbers would collide: the table holds them
        for bar, value in zip(bars, tests):
            if not math.isnan(value):
                bar_ax.text(bar.get_x() + bar.get_width() / 2, value, f"{value:.3f}", ha="center", va="bottom",
                            fontsize=8)
    step = math.ceil(len(jobs) / 30)  # at most ~30 job numbers under the bars
    bar_ax.set_xticks(positions[::step], labels=[job.job for job in jobs][::step], fontsize=8)
    bar_ax.set_xlabel("job")
    bar_ax.set_ylim(0, 1.05)
    bar_ax.set_title("Test accuracy")


@dataclass(frozen=True)
class _TableLayout:
    header: list[str]
    cells: list[list[str]]
    columns: list[float]  # inches
    blocks: int
    per_block: int

    @property
    def block_width(self) -> float:
        return sum(self.columns)

    @property
    def width(self) -> float:
        return self.blocks * self.block_width + (self.blocks - 1) * BLOCK_GAP

    @property
    def height(self) -> float:  # with its caption and margins
        return 0.6 + (self.per_block + 1) * ROW_INCHES


def _layout(jobs: Sequence[SweepJob]) -> _TableLayout:
    header, cells = _table(jobs)
    columns = [max(_text_inches(header[c], "bold"), *(_text_inches(row[c]) for row in cells)) + 0.3
               for c in range(len(header))]
    blocks = min(MAX_BLOCKS, math.ceil(len(cells) / MAX_BLOCK_ROWS))
    return _TableLayout(header, cells, columns, blocks, math.ceil(len(cells) / blocks))


def _draw_table(fig: Figure, table: _TableLayout, colors: list) -> list:
    """The table in blocks of rows side by side, at the figure's bottom left; the job cells in the jobs' colours.
    Returns the blocks' axes."""
    width, height = fig.get_size_inches()
    axes = []
    for b in range(table.blocks):
        rows = table.cells[b * table.per_block:(b + 1) * table.per_block]
        ax = fig.add_axes(((0.5 + b * (table.block_width + BLOCK_GAP)) / width,
                           (0.15 + (table.per_block - len(rows)) * ROW_INCHES) / height,
                           table.block_width / width, (len(rows) + 1) * ROW_INCHES / height))
        ax.axis("off")
        drawn = ax.table(cellText=rows, colLabels=table.header, cellLoc="center", bbox=(0, 0, 1, 1),
                         colWidths=[c / table.block_width for c in table.columns])
        drawn.auto_set_font_size(False)
        drawn.set_fontsize(TABLE_FONT)
        for (r, c), cell in drawn.get_celld().items():
            if r == 0:
                cell.set_facecolor("#e8e8e8")
                cell.get_text().set_fontweight("bold")
            elif c == 0:
                color = colors[b * table.per_block + r - 1]
                cell.set_facecolor(color)
                luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
                cell.get_text().set_color("black" if luminance > 0.55 else "white")
                cell.get_text().set_fontweight("bold")
        axes.append(ax)
    fig.text(0.5 / width, (0.2 + (table.per_block + 1) * ROW_INCHES) / height,
             "Jobs (colours as in the panels): the overrides that differ between them, to 3 significant digits, "
             "and their accuracies", fontsize=TABLE_FONT, va="bottom")
    return axes


def compare_figure(jobs: Sequence[SweepJob]) -> Figure:
    """The three panels over the table of the jobs; a table wider than the panels widens the figure."""
    if not jobs:
        raise ValueError("no jobs to compare")
    colors = job_colors(len(jobs))
    table = _layout(jobs)
    height = table.height + PANELS_BOTTOM + AXES_INCHES + PANELS_TOP
    fig = plt.figure(figsize=(max(16.0, table.width + 1.0), height))
    _draw_panels(fig, jobs, colors, (table.height + PANELS_BOTTOM) / height, 1 - PANELS_TOP / height)
    _draw_table(fig, table, colors)
    return fig


def plot_compare(jobs: Sequence[SweepJob], path: Path) -> None:
    """Save compare_figure as PNG."""
    save_figure(compare_figure(jobs), path)
