"""The images behind the confusion matrix: for each (true, predicted) cell its count and up to `cap` thumbnails
with their probability, and the explanations' overlays (explain/explanations.csv), as data for the page's script."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgcls_cli.data.decode import DecodeError, decode_image
from imgcls_cli.report.rundata import Evaluation, Prediction
from imgcls_cli.report.thumbs import (MAX_EXPLANATIONS, MAX_THUMBNAILS, OVERLAY_SIZE, ImageSource, cell_cap,
                                      jpeg_base64)


MAX_GRID_CLASSES = 100  # more classes: the page lists the largest cells instead of drawing the whole matrix
MAX_LISTED_CELLS = 400


@dataclass
class Gallery:
    cells: dict[str, dict[str, Any]]  # "t,p" -> {"n": count, "items": [[jpeg or None, probability, key, [ex]]]}
    cap: int  # thumbnails a cell shows at most
    grid: bool = True  # the whole matrix (else: only the largest cells, listed)
    shown: int = 0  # thumbnails in the page
    unread: int = 0  # images chosen for a cell whose pixels could not be had


def _order(items: list[Prediction], diagonal: bool, explained: dict[str, list[int]]) -> list[Prediction]:
    """Explained images first; then errors most confident first, right answers least confident first (the ones
    most worth a look)."""
    def key(p: Prediction) -> tuple[int, float, str]:
        probability = p.probability if math.isfinite(p.probability) else 0.0
        return (0 if p.key in explained else 1, probability if diagonal else -probability, p.key)

    return sorted(items, key=key)


def build_gallery(evaluation: Evaluation, images: ImageSource | None, explained: dict[str, list[int]]) -> Gallery:
    """Each cell's count and its first `cap` images (see _order) as thumbnails, the largest cells first while the
    page's MAX_THUMBNAILS last; `images` None: the counts alone. With more than MAX_GRID_CLASSES classes, only the
    MAX_LISTED_CELLS largest cells."""
    groups: dict[tuple[int, int], list[Prediction]] = {}
    for p in evaluation.predictions:
        groups.setdefault((p.target, p.label), []).append(p)
    largest = sorted(groups, key=lambda c: (-len(groups[c]), c))
    grid = len(evaluation.classes) <= MAX_GRID_CLASSES
    if not grid:
        largest = largest[:MAX_LISTED_CELLS]
    cap = cell_cap(len(groups[c]) for c in largest)
    budget, chosen = MAX_THUMBNAILS, {}
    for cell in largest:
        take = min(len(groups[cell]), cap, budget)
        chosen[cell] = _order(groups[cell], cell[0] == cell[1], explained)[:take]
        budget -= take
    keys = [p.key for items in chosen.values() for p in items]
    pixels = images.load(keys) if images is not None and keys else {}
    cells = {}
    for (t, p), items in chosen.items():
        cells[f"{t},{p}"] = {"n": len(groups[(t, p)]), "items": [
            [jpeg_base64(pixels[i.key]) if i.key in pixels else None, _rounded(i.probability), i.key,
             explained.get(i.key, [])] for i in items]}
    unread = sum(1 for k in keys if k not in pixels) if images is not None else 0
    return Gallery(cells, cap, grid, shown=len(keys) - unread, unread=unread)


def _rounded(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def _overlay(folder: Path, name: str) -> Path | None:
    """explain/<name>, where it stays inside explain/ (no absolute path, no way up)."""
    root = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(root, name))
    return Path(path) if name and not os.path.isabs(name) and path.startswith(root + os.sep) else None


def explanation_data(evaluation: Evaluation) -> tuple[list[dict[str, Any]], dict[str, list[int]], int]:
    """The overlays of explain/explanations.csv (at most MAX_EXPLANATIONS) for the page, which explanations
    each key has, and how many overlays could not be read."""
    by_key = {p.key: p for p in evaluation.predictions}
    folder = evaluation.folder / "explain"
    out: list[dict[str, Any]] = []
    explained: dict[str, list[int]] = {}
    unread = 0
    for row in evaluation.explanations[:MAX_EXPLANATIONS]:
        path = _overlay(folder, row.get("overlay") or "")
        try:
            src = jpeg_base64(decode_image(path, 3, None), OVERLAY_SIZE) if path is not None else None
        except (DecodeError, OSError, ValueError):
            src = None
        if src is None:
            unread += 1
        key = row.get("key") or ""
        scored = by_key.get(key)
        try:
            probability = _rounded(float(row.get("probability") or "nan"))
        except ValueError:
            probability = None
        explained.setdefault(key, []).append(len(out))
        out.append({"src": src, "key": key, "kind": row.get("kind") or "", "target": row.get("target") or "",
                    "label": row.get("label") or "", "p": probability,
                    "cell": [scored.target, scored.label] if scored else None})
    return out, explained, unread
