"""Figures of a multi-label evaluation: per-label AP bars, per-label 2 x 2 confusion matrices, precision-recall
curves of the worst labels. Each *_figure returns its figure (tests inspect what it draws); save it with
imgcls_cli.plots.save_figure (atomic, then closed)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import precision_recall_curve  # noqa: E402

from imgcls_cli.metrics import row_normalized  # noqa: E402
from imgcls_cli.multilabel.metrics import average_precisions, confusion_counts  # noqa: E402
from imgcls_cli.plots import shorten  # noqa: E402

MAX_PANELS = 100  # confusion_grid_figure draws at most this many labels: those with the most errors
PANEL_INCHES = 1.55  # one label's 2 x 2 matrix and its title
NAME_CHARS = 18  # a label's name in a panel title or the legend, cut in the middle beyond this


def ap_bars_figure(rows: Sequence[Mapping[str, object]]) -> Figure:
    """Horizontal bars of each label's AP (per_label_rows' rows), best at the top, the macro mAP as a line.

    Labels without positive rows have no AP: they get no bar and the title counts them."""
    scored = [(str(r["label"]), float(r["ap"])) for r in rows if not math.isnan(float(r["ap"]))]  # type: ignore
    scored.sort(key=lambda item: (-item[1], item[0]))
    fig, ax = plt.subplots(figsize=(7.0, float(np.clip(1.2 + 0.28 * len(scored), 3.0, 36.0))))
    unscored = len(rows) - len(scored)
    title = f"Average precision per label ({len(scored)} labels"
    title += f"; {unscored} without positives not shown)" if unscored else ")"
    if scored:
        names, values = zip(*scored)
        positions = np.arange(len(scored))
        ax.barh(positions, values, color="tab:blue", height=0.7)
        ax.set_yticks(positions, labels=[shorten(n, NAME_CHARS) for n in names],
                      fontsize=float(np.clip(11 - len(scored) / 10, 6, 9)))
        ax.invert_yaxis()
        for y, v in zip(positions, values):  # inside a long bar, in white; after a short one
            inside = v > 0.88
            ax.text(v - 0.01 if inside else v + 0.01, y, f"{v:.3f}", va="center", ha="right" if inside else "left",
                    fontsize=7, color="white" if inside else "black")
        mean = float(np.mean(values))
        ax.axvline(mean, color="tab:red", linestyle="--", label=f"macro mAP = {mean:.4f}")
        title += f"\ndashed line: macro mAP = {mean:.4f}"
    ax.set_title(title)
    ax.set_xlim(0, 1)
    ax.set_xlabel("average precision")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def confusion_grid_figure(probs: np.ndarray, targets: np.ndarray, thresholds: np.ndarray | float,
                          classes: Sequence[str]) -> Figure:
    """One small 2 x 2 matrix per label (rows true no/yes, columns predicted no/yes) with its counts, shaded by
    the fraction of its true row, in a grid; over MAX_PANELS labels, those with the most errors.

    The grid is one image in one axes (as plots.image_grid_figure's mosaic): a subplot per label takes seconds
    to draw at 100 labels. Each label's title is a text with gid "label", its counts (tn, fp, fn, tp) follow it
    as texts with gid "count"."""
    counts = confusion_counts(probs, targets, thresholds)
    shown = np.arange(len(classes))
    if len(shown) > MAX_PANELS:
        errors = counts[:, 0, 1] + counts[:, 1, 0]
        shown = np.sort(np.argsort(-errors, kind="stable")[:MAX_PANELS])
    num_cols = min(len(shown), max(4, math.ceil(math.sqrt(len(shown)))))
    num_rows = math.ceil(len(shown) / num_cols)
    # A panel is 3 x 3 cells: a title row above its 2 x 2 matrix, and a column of space to its right.
    mosaic = np.ones((3 * num_rows, 3 * num_cols, 4))
    cmap = plt.get_cmap("Blues")
    for k, c in enumerate(shown):
        top, left = 3 * (k // num_cols) + 1, 3 * (k % num_cols)
        mosaic[top:top + 2, left:left + 2] = cmap(row_normalized(counts[c]))
    fig = plt.figure(figsize=(PANEL_INCHES * num_cols, PANEL_INCHES * num_rows + 0.5))
    ax = fig.add_axes((0.0, 0.0, 1.0, PANEL_INCHES * num_rows / (PANEL_INCHES * num_rows + 0.5)))
    ax.imshow(mosaic, interpolation="nearest", aspect="auto")
    ax.axis("off")
    for k, c in enumerate(shown):
        top, left = 3 * (k // num_cols) + 1, 3 * (k % num_cols)
        ax.text(left + 0.5, top - 0.75, shorten(str(classes[c]), NAME_CHARS), ha="center", va="bottom",
                fontsize=8, gid="label")
        fractions = row_normalized(counts[c])
        for (i, j), n in np.ndenumerate(counts[c]):
            ax.text(left + j, top + i, str(int(n)), ha="center", va="center", fontsize=8, gid="count",
                    color="white" if fractions[i, j] > 0.6 else "black")
        ax.add_patch(plt.Rectangle((left - 0.5, top - 0.5), 2, 2, fill=False, linewidth=0.6, clip_on=False))
    what = (f"{len(shown)} of {len(classes)} labels, those with the most errors" if len(shown) < len(classes)
            else f"{len(classes)} labels")
    fig.suptitle(f"Per-label confusion ({what})\nin each: rows true no / yes, columns predicted no / yes",
                 fontsize=10, y=1.0, va="top")
    return fig


def pr_curves_figure(probs: np.ndarray, targets: np.ndarray, classes: Sequence[str], worst: int = 6,
                     thresholds: np.ndarray | float | None = None) -> Figure:
    """Precision-recall curves of the `worst` labels with the lowest AP (labels with positive rows), AP in the
    legend; given thresholds, each label's operating point at its threshold is marked."""
    ap = average_precisions(probs, targets)
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets)
    scored = np.flatnonzero(~np.isnan(ap))
    chosen = scored[np.argsort(ap[scored], kind="stable")][:worst]
    limits = None if thresholds is None else np.broadcast_to(np.asarray(thresholds, dtype=np.float64),
                                                             (probs.shape[1],))
    fig, ax = plt.subplots(figsize=(7.0, 5.2))
    for k, c in enumerate(chosen):
        precision, recall, _ = precision_recall_curve(targets[:, c], probs[:, c])
        color = f"C{k % 10}"
        ax.plot(recall, precision, drawstyle="steps-post", color=color,
                label=f"{shorten(str(classes[c]), NAME_CHARS)} (AP {ap[c]:.3f})")
        if limits is not None:
            predicted = probs[:, c] >= limits[c]
            hits = int((predicted & (targets[:, c] == 1)).sum())
            point_precision = hits / predicted.sum() if predicted.any() else 0.0
            ax.plot([hits / targets[:, c].sum()], [point_precision], marker="o", markersize=7, linestyle="none",
                    color=color, markeredgecolor="black", clip_on=False)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    marked = "; dots: each label's threshold" if limits is not None and len(chosen) else ""
    ax.set_title(f"Precision-recall of the {len(chosen)} labels with the lowest AP{marked}")
    ax.grid(True, alpha=0.3)
    if len(chosen):
        ax.legend(loc="lower left", fontsize=8)
    return fig
