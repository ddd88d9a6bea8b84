"""PNG figures of a run (curves, confusion matrix, reliability, image grids), written without opening a window.

A figure a reader has to decode is built by a *_figure function that returns it (tests inspect what it draws);
plot_* saves it (save_figure: atomically, then closed)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from imgcls_cli.metrics import row_normalized  # noqa: E402
from imgcls_cli.rundir import atomic_writer  # noqa: E402

DPI = 110
MAX_ANNOTATED_CLASSES = 30
GRID_CELL_INCHES = 2.2  # an image and its title in plot_image_grid
GRID_TITLE_CHARS = 30  # the characters of a title line that fit its 2.2 in at 7 pt


def to_float(value: object) -> float:
    """A number, or NaN for a missing value (None, '', NaN, unparsable)."""
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def save_figure(fig: Figure, path: Path) -> None:
    """Write the figure as PNG atomically (rundir.atomic_writer: a failed write is one line, the previous file
    stays), then close it."""
    try:
        with atomic_writer(path) as f:
            fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    finally:
        plt.close(fig)


def _plot_pair(ax: plt.Axes, epochs: np.ndarray, train: np.ndarray, val: np.ndarray) -> None:
    """Draw the train and val series; val is skipped when it has no value at all."""
    ax.plot(epochs, train, marker="o", markersize=3, label="train")
    if not np.isnan(val).all():
        # Markers keep an isolated val point visible between missing epochs.
        ax.plot(epochs, val, marker="o", markersize=3, label="val")
    epoch_axis(ax)


def epoch_axis(ax: plt.Axes) -> None:
    """An x axis of whole epochs (no "1.5" on a short run, one tick for one epoch), and a light grid."""
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(True, alpha=0.3)


def _mark_best(ax: plt.Axes, epochs: np.ndarray, val: np.ndarray, best_epoch: int) -> None:
    """A labelled vertical line at the best epoch, and a star on the val curve there."""
    ax.axvline(best_epoch, color="tab:green", linestyle=":", linewidth=1.6, label=f"best epoch ({best_epoch})")
    at = np.flatnonzero(epochs == best_epoch)
    if len(at) and not np.isnan(val[at[-1]]):
        ax.plot([best_epoch], [val[at[-1]]], marker="*", markersize=12, color="tab:green", linestyle="none")


def curves_figure(rows: Sequence[Mapping[str, float]], best_epoch: int | None = None) -> Figure:
    """Loss and accuracy against epoch, train and val, side by side; best_epoch (summary.json's) marked on each."""
    if not rows:
        raise ValueError("no epochs to plot")
    columns = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")
    data = {key: np.array([to_float(row.get(key)) for row in rows]) for key in columns}
    epochs = np.array([to_float(row.get("epoch", i + 1)) for i, row in enumerate(rows)])
    best = best_epoch if best_epoch and best_epoch in epochs else None

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, name in zip(axes, ("loss", "accuracy")):
        _plot_pair(ax, epochs, data[f"train_{name}"], data[f"val_{name}"])
        if best is not None:
            _mark_best(ax, epochs, data[f"val_{name}"], best)
        ax.set_title(name.capitalize())
        ax.set_ylabel(name)
        ax.legend()
    axes[1].set_ylim(-0.02, 1.02)
    return fig


def plot_curves(rows: Sequence[Mapping[str, float]], path: Path, best_epoch: int | None = None) -> None:
    """Save curves_figure as PNG."""
    save_figure(curves_figure(rows, best_epoch), path)


def _annotate(ax: plt.Axes, values: np.ndarray, normalize: bool, vmax: float, fontsize: float) -> None:
    """Write each cell's value, white on dark cells and black on light ones."""
    threshold = vmax / 2
    for (i, j), value in np.ndenumerate(values):
        text = f"{value:.2f}" if normalize else f"{int(value)}"
        color = "white" if value > threshold else "black"
        ax.text(j, i, text, ha="center", va="center", color=color, fontsize=fontsize)


def plot_confusion_matrix(
    cm: np.ndarray,
    classes: Sequence[str],
    path: Path,
    normalize: bool = False,
    title: str = "Confusion matrix",
) -> None:
    """Save a confusion-matrix heatmap (rows true, columns predicted), counts or row fractions."""
    cm = np.asarray(cm)
    num_classes = len(classes)
    if num_classes == 0 or cm.shape != (num_classes, num_classes):
        raise ValueError(f"cm must have shape ({num_classes}, {num_classes}), got {cm.shape}")
    values = row_normalized(cm) if normalize else cm.astype(np.float64)
    vmax = 1.0 if normalize else max(float(values.max()), 1.0)

    # ~0.3 in per class keeps 100 labels legible; the cap keeps huge K under ~4000 px.
    side = float(np.clip(2.5 + 0.3 * num_classes, 5.5, 30.0))
    fontsize = float(np.clip(12 - num_classes / 8, 6, 10))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)

    ticks = np.arange(num_classes)
    few = num_classes <= 10
    ax.set_xticks(ticks, labels=list(classes), fontsize=fontsize,
                  rotation=45 if few else 90, ha="right" if few else "center")
    ax.set_yticks(ticks, labels=list(classes), fontsize=fontsize)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title)
    if num_classes <= MAX_ANNOTATED_CLASSES:
        _annotate(ax, values, normalize, vmax, fontsize)
    save_figure(fig, path)


def plot_augment_preview(
    images: object,
    labels: object,
    classes: Sequence[str],
    path: Path,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> None:
    """Save a grid (up to 8 x 4) of augmented training images titled with their class, to check a recipe by eye.

    images: (N, C, H, W) floats in [0, 1], or normalized ones with their mean and std. labels: (N,) class
    indices, or (N, K) soft targets after MixUp/CutMix, titled with their top two classes and weights.
    Torch tensors are accepted as they are (moved to the CPU here), so plots.py needs no torch import.
    """
    def as_array(a: object) -> np.ndarray:
        return np.asarray(a.detach().cpu() if hasattr(a, "detach") else a, dtype=np.float64)

    pixels, targets = as_array(images)[:32], as_array(labels)[:32]
    if mean is not None and std is not None:
        pixels = pixels * np.asarray(std).reshape(1, -1, 1, 1) + np.asarray(mean).reshape(1, -1, 1, 1)
    pixels = np.clip(pixels, 0.0, 1.0)
    plot_image_grid(pixels, [_preview_title(t, classes) for t in targets], path)


def _preview_title(target: np.ndarray, classes: Sequence[str]) -> str:
    """The class name of a hard label; the top two classes with their weights for a soft target."""
    if target.ndim == 0:
        return str(classes[int(target)])
    if np.isin(target, (0.0, 1.0)).all() and target.sum() != 1:  # a multi-label image's set (maybe empty)
        return "|".join(str(classes[int(i)]) for i in np.flatnonzero(target)) or "(no label)"
    top = np.argsort(-target, kind="stable")[:2]
    shown = [i for i in top if target[i] >= 0.005] or top[:1]
    if len(shown) == 1 and target[shown[0]] >= 0.995:
        return str(classes[int(shown[0])])
    return " / ".join(f"{classes[int(i)]} {target[i]:.2f}" for i in shown)


def plot_lr(lrs_per_step: Sequence[float], iters_per_epoch: int, path: Path) -> None:
    """Save the learning rate of every scheduler step against the epoch, to check a schedule and its warmup by eye."""
    if len(lrs_per_step) == 0 or iters_per_epoch < 1:
        raise ValueError(f"need lrs and iters_per_epoch >= 1, got {len(lrs_per_step)} lrs, {iters_per_epoch}")
    lrs = np.asarray(lrs_per_step, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(np.arange(len(lrs)) / iters_per_epoch, lrs)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title("Learning rate")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    save_figure(fig, path)


def plot_lr_find(lrs: Sequence[float], losses: Sequence[float], smoothed: Sequence[float], suggestion: int | None,
                 path: Path) -> None:
    """The range test's loss against the lr (log axis): each step's loss, the smoothed loss, the suggested lr."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(lrs, losses, color="0.75", linewidth=0.8, label="loss")
    ax.plot(lrs, smoothed, color="C0", label="smoothed loss")
    if suggestion is not None:
        ax.plot([lrs[suggestion]], [smoothed[suggestion]], "o", color="C3",
                label=f"suggested lr {lrs[suggestion]:.3g} (steepest descent)")
    ax.set_xscale("log")
    if len(smoothed):  # the diverging tail would squash the curve
        ax.set_ylim(min(min(losses), min(smoothed)) * 0.95, max(smoothed[0], min(smoothed)) * 1.5)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("Learning-rate range test")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def reliability_figure(counts: np.ndarray, accuracy: np.ndarray, confidence: np.ndarray, ece: float) -> Figure:
    """A reliability diagram: per confidence bin, accuracy as a bar and mean confidence as a marker on the same
    scale, joined by the gap ECE averages; below, the number of samples in each bin.

    A marker above its bar means over-confidence. counts, accuracy, confidence: per equal-width bin over [0, 1],
    as metrics.calibration_bins returns them.
    """
    counts, accuracy, confidence = np.asarray(counts), np.asarray(accuracy), np.asarray(confidence)
    num_bins = len(counts)
    if num_bins == 0 or accuracy.shape != counts.shape or confidence.shape != counts.shape:
        raise ValueError(f"need equal-length non-empty bins, got {counts.shape}, {accuracy.shape}, {confidence.shape}")
    width = 1.0 / num_bins
    centers = (np.arange(num_bins) + 0.5) * width
    filled = counts > 0
    fig, (rel_ax, hist_ax) = plt.subplots(2, 1, figsize=(8.5, 6.5), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1]})
    diagonal = rel_ax.plot([0, 1], [0, 1], linestyle="--", color="gray",
                           label="perfect calibration (accuracy = confidence)")
    bars = rel_ax.bar(centers[filled], accuracy[filled], width=width * 0.9, color="tab:blue", alpha=0.75,
                      label="accuracy: fraction correct in the bin")
    gaps = rel_ax.vlines(centers[filled], accuracy[filled], confidence[filled], color="tab:red", linewidth=2.5,
                         label="gap between them\n(ECE: its mean, weighted by count)")
    markers = rel_ax.plot(centers[filled], confidence[filled], linestyle="none", marker="D", markersize=6,
                          color="tab:orange", markeredgecolor="black",
                          label="mean confidence in the bin\n(above its bar: over-confident)")
    rel_ax.set_xlim(0, 1)
    rel_ax.set_ylim(0, 1)
    rel_ax.set_ylabel("accuracy / mean confidence")
    rel_ax.set_title(f"Reliability diagram: ECE = {ece:.4f} over {int(counts.sum())} samples")
    rel_ax.legend(handles=[bars, *markers, gaps, *diagonal], loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  fontsize=8, borderaxespad=0)
    rel_ax.grid(True, alpha=0.3)
    hist_ax.bar(centers, counts, width=width * 0.9, color="tab:gray")
    for x, n in zip(centers[filled], counts[filled]):
        hist_ax.text(x, n, _count_text(int(n)), ha="center", va="bottom", fontsize=7)
    hist_ax.set_ylim(0, max(1.0, float(counts.max())) * 1.3)  # room for the numbers above the bars
    hist_ax.set_xlabel("confidence (max probability)")
    hist_ax.set_ylabel("samples")
    return fig


def _count_text(n: int) -> str:
    """A bin's count in at most 5 characters: 87, 4321, 12.3k."""
    return str(n) if n < 10_000 else f"{n / 1000:.1f}k" if n < 100_000 else f"{n // 1000}k"


def plot_reliability(counts: np.ndarray, accuracy: np.ndarray, confidence: np.ndarray, ece: float, path: Path) -> None:
    """Save reliability_figure as PNG."""
    save_figure(reliability_figure(counts, accuracy, confidence, ece), path)


def image_grid_figure(images: np.ndarray, titles: Sequence[str], limit: int = 32, title: str | None = None) -> Figure:
    """A grid (8 wide, up to `limit` images) with a title above each and, given one, a title over the figure:
    augmented samples, the most confident errors of a run, predictions.

    images: (N, C, H, W), uint8 in [0, 255] or floats in [0, 1]; floats outside [0, 1] (normalized inputs) are
    stretched per image to [0, 1] so they stay recognizable instead of clipping to black and white.
    """
    pixels = np.asarray(images)[:limit]
    if pixels.ndim != 4 or len(pixels) == 0 or len(titles) < len(pixels):
        raise ValueError(f"need (N, C, H, W) images with a title each, got {pixels.shape} and {len(titles)} titles")
    pixels = _display_range(pixels)
    n, c, h, w = pixels.shape
    num_cols = min(8, n)
    num_rows = math.ceil(n / num_cols)
    # One mosaic in one axes, as in plot_augment_preview: much faster to draw than a subplot per image.
    gap = max(2, w // 8)
    lines = max(str(t).count("\n") + 1 for t in titles[:n])
    band = math.ceil((w + gap) * (0.12 + 0.14 * lines) / GRID_CELL_INCHES)  # ~0.14 in a 7-pt line of title
    mosaic = np.ones((num_rows * (h + band + gap), num_cols * (w + gap), 3))
    for i, image in enumerate(pixels):
        top, left = (i // num_cols) * (h + band + gap) + band, (i % num_cols) * (w + gap)
        mosaic[top:top + h, left:left + w] = (np.repeat(image, 3, axis=0) if c == 1 else image[:3]).transpose(1, 2, 0)
    # The axes fill the figure, whose shape is the mosaic's: each image and its title get the full 2.2 in.
    width = GRID_CELL_INCHES * num_cols
    heading = 0.4 if title else 0.0
    height = width * mosaic.shape[0] / mosaic.shape[1]
    fig = plt.figure(figsize=(width, height + heading))
    ax = fig.add_axes((0.0, 0.0, 1.0, height / (height + heading)))
    ax.imshow(mosaic, interpolation="nearest", aspect="equal")
    ax.axis("off")
    for i, text in enumerate(titles[:n]):
        x, y = (i % num_cols) * (w + gap) + w / 2, (i // num_cols) * (h + band + gap) + band / 2
        ax.text(x, y, text, ha="center", va="center", fontsize=7)
    if title:
        fig.suptitle(title, y=1.0 - 0.08 / (height + heading), va="top", fontsize=10)
    return fig


def plot_image_grid(images: np.ndarray, titles: Sequence[str], path: Path, limit: int = 32,
                    title: str | None = None) -> None:
    """Save image_grid_figure as PNG."""
    save_figure(image_grid_figure(images, titles, limit, title), path)


def shorten(text: str, limit: int = GRID_TITLE_CHARS) -> str:
    """text cut in the middle with an ellipsis to at most `limit` characters, so a file name keeps its end."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return f"{text[:head]}…{text[len(text) - (limit - 1 - head):]}"


def _display_range(pixels: np.ndarray) -> np.ndarray:
    """Images as floats in [0, 1]: uint8 scaled by 1/255, floats in range kept, others min-max stretched per image."""
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float64) / 255.0
    pixels = pixels.astype(np.float64)
    if pixels.min() >= 0.0 and pixels.max() <= 1.0:
        return pixels
    low = pixels.min(axis=(1, 2, 3), keepdims=True)
    span = pixels.max(axis=(1, 2, 3), keepdims=True) - low
    return np.divide(pixels - low, span, out=np.zeros_like(pixels), where=span > 0)
