"""Inline SVG charts drawn from numbers: line charts (curves, with a marked epoch) and the reliability diagram.
Labels are escaped; each point and bar carries its value as a tooltip (<title>)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from imgcls_cli.report.markup import esc

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
WIDTH, HEIGHT = 440, 270
LEFT, RIGHT, TOP, BOTTOM = 58, 14, 46, 40  # the plot area's margins
MAX_MARKERS = 120  # points of one series drawn as dots (with their value as a tooltip); longer series: the line


@dataclass
class Series:
    label: str
    x: Sequence[float]
    y: Sequence[float]  # NaN where there is no value (an epoch without validation)
    color: str = PALETTE[0]
    dashed: bool = False


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else [0.0]
    raw = (high - low) / max(1, count)
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if raw <= m * step)
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((high - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    """A tick's text, at most about 6 characters (0.00075 is 7.5e-4), so that it clears the axis title."""
    text = f"{value:.4g}"
    if 0 < abs(value) < 0.01:
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa.replace('.0', '')}e{int(exponent)}"
    return text


class _Frame:
    """Data coordinates to pixels of one chart's plot area."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float]) -> None:
        self.x0, self.x1 = x_range if x_range[1] > x_range[0] else (x_range[0] - 0.5, x_range[0] + 0.5)
        self.y0, self.y1 = y_range if y_range[1] > y_range[0] else (y_range[0] - 0.5, y_range[0] + 0.5)

    def px(self, x: float) -> float:
        return LEFT + (x - self.x0) / (self.x1 - self.x0) * (WIDTH - LEFT - RIGHT)

    def py(self, y: float) -> float:
        return HEIGHT - BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (HEIGHT - TOP - BOTTOM)


def _axes(frame: _Frame, x_ticks: list[float], y_ticks: list[float], x_label: str, y_label: str) -> str:
    parts = []
    for y in y_ticks:
        py = frame.py(y)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py:.1f}" y2="{py:.1f}"/>'
                     f'<text class="tick" x="{LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">{_label(y)}</text>')
    for x in x_ticks:
        px = frame.px(x)
        parts.append(f'<text class="tick" x="{px:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
                     f"{_label(x)}</text>")
    parts.append(f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" '
                 f'height="{HEIGHT - TOP - BOTTOM}"/>')
    parts.append(f'<text class="axis" x="{(LEFT + WIDTH - RIGHT) / 2:.0f}" y="{HEIGHT - 6}" text-anchor="middle">'
                 f"{esc(x_label)}</text>")
    if y_label:
        parts.append(f'<text class="axis" transform="translate(13 {(TOP + HEIGHT - BOTTOM) / 2:.0f}) rotate(-90)" '
                     f'text-anchor="middle">{esc(y_label)}</text>')
    return "".join(parts)


def _legend(series: Sequence[Series]) -> str:
    parts, x = [], LEFT
    for s in series:
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        parts.append(f'<line x1="{x}" x2="{x + 16}" y1="33" y2="33" stroke="{s.color}" stroke-width="2"{dash}/>'
                     f'<text class="legend" x="{x + 20}" y="37">{esc(s.label)}</text>')
        x += 30 + 7 * min(len(s.label), 40)
    return "".join(parts)


def _runs(points: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """The points split where a value is missing (no line is drawn across a gap)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if math.isfinite(x) and math.isfinite(y):
            runs[-1].append((x, y))
        elif runs[-1]:
            runs.append([])
    return [r for r in runs if r]


def _series(frame: _Frame, s: Series) -> str:
    parts = []
    dash = ' stroke-dasharray="5 3"' if s.dashed else ""
    runs = _runs(list(zip(map(float, s.x), map(float, s.y))))
    for run in runs:
        coords = " ".join(f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in run)
        parts.append(f'<polyline fill="none" stroke="{s.color}" stroke-width="1.8"{dash} points="{coords}"/>')
    points = [p for run in runs for p in run]
    if len(points) <= MAX_MARKERS:
        parts += [f'<circle cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="2.6" fill="{s.color}">'
                  f"<title>{esc(s.label)}: {y:.4g} (epoch {_label(x)})</title></circle>" for x, y in points]
    return "".join(parts)


def line_chart(title: str, series: Sequence[Series], *, x_label: str = "epoch", y_label: str = "",
               mark_x: float | None = None, mark_label: str = "", y_range: tuple[float, float] | None = None) -> str:
    """One chart of the series against x; mark_x: a dashed vertical line labelled mark_label (the best epoch)."""
    xs = [float(v) for s in series for v in s.x if math.isfinite(float(v))]
    ys = [float(v) for s in series for v in s.y if math.isfinite(float(v))]
    if not xs or not ys:
        return ""
    if y_range is None:
        y_range = (min(0.0, min(ys)), max(ys) * 1.05 if max(ys) > 0 else 1.0)
    frame = _Frame((min(xs), max(xs)), y_range)
    x_ticks = nice_ticks(frame.x0, frame.x1, min(6, max(1, int(frame.x1 - frame.x0))))
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
             f'aria-label="{esc(title)}"><text class="title" x="{LEFT}" y="16">{esc(title)}</text>',
             _axes(frame, x_ticks, nice_ticks(frame.y0, frame.y1), x_label, y_label), _legend(series)]
    parts += [_series(frame, s) for s in series]
    if mark_x is not None and math.isfinite(mark_x):
        px = frame.px(mark_x)
        parts.append(f'<line class="mark" x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}"/>'
                     f'<text class="mark-label" x="{min(px + 4, WIDTH - RIGHT - 70):.1f}" y="{TOP + 12}">'
                     f"{esc(mark_label)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def reliability_diagram(counts: Sequence[int], accuracy: Sequence[float], confidence: Sequence[float],
                        ece: float | None) -> str:
    """Accuracy per confidence bin as bars and the bin's mean confidence as a marker joined to the bar's top by the
    gap, against the diagonal (a bar under its marker: over-confidence); bin counts as tooltips."""
    bins = len(counts)
    frame = _Frame((0.0, 1.0), (0.0, 1.0))
    title = "Reliability" + (f" (ECE {ece:.4f})" if ece is not None else "")
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
             f'aria-label="{esc(title)}"><text class="title" x="{LEFT}" y="16">{esc(title)}</text>',
             _axes(frame, nice_ticks(0, 1), nice_ticks(0, 1), "confidence (predicted probability)", "accuracy")]
    total = max(1, sum(counts))
    for i, (n, acc, conf) in enumerate(zip(counts, accuracy, confidence)):
        if not n:
            continue
        x0, x1 = frame.px(i / bins), frame.px((i + 1) / bins)
        tip = esc(f"confidence {i / bins:.2f}–{(i + 1) / bins:.2f}: {n} images ({100 * n / total:.1f}%), accuracy "
                  f"{acc:.3f}, mean confidence {conf:.3f}")
        mid, y_acc, y_conf = (x0 + x1) / 2, frame.py(acc), frame.py(conf)
        parts.append(f'<rect class="bar" x="{x0 + 1:.1f}" y="{y_acc:.1f}" width="{max(x1 - x0 - 2, 1):.1f}" '
                     f'height="{frame.py(0) - y_acc:.1f}"><title>{tip}</title></rect>'
                     f'<line class="gap" x1="{mid:.1f}" x2="{mid:.1f}" y1="{y_acc:.1f}" y2="{y_conf:.1f}"/>'
                     f'<path class="confidence" d="M{mid:.1f} {y_conf - 4:.1f} l4 4 l-4 4 l-4 -4 z">'
                     f"<title>{tip}</title></path>")
    parts.append(f'<line class="diagonal" x1="{frame.px(0)}" y1="{frame.py(0)}" x2="{frame.px(1)}" '
                 f'y2="{frame.py(1)}"/>')
    legend = [("bar", "accuracy in the bin"), ("confidence", "mean confidence"), ("gap", "gap (ECE: its mean)")]
    x = LEFT
    for kind, text in legend:
        mark = (f'<rect class="bar" x="{x}" y="28" width="10" height="9"/>' if kind == "bar" else
                f'<path class="confidence" d="M{x + 5} 28 l4 4 l-4 4 l-4 -4 z"/>' if kind == "confidence" else
                f'<line class="gap" x1="{x + 5}" x2="{x + 5}" y1="27" y2="38"/>')
        parts.append(f'{mark}<text class="legend" x="{x + 14}" y="37">{text}</text>')
        x += 24 + 6 * len(text)
    parts.append("</svg>")
    return "".join(parts)
