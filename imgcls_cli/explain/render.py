"""The pictures of an explanation, drawn with OpenCV: an overlay per image (the image, the heat map over it, and
lines of text under them: the class explained and the top-3 classes) and a mosaic of the overlays. Every PNG is
written atomically."""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from imgcls_cli.rundir import write_text_atomic

PANEL = 160  # px a side an image is shown at, at least (whole multiples of its size: pixels stay sharp)
GAP = 6
LINE = 18  # px per line of text
FONT, SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.45
HEAT_WEIGHT = 0.5  # the heat map's share of the blended panel
MOSAIC_LIMIT = 64  # overlays in mosaic.png: the first ones, in the order of the CSV
MOSAIC_COLUMNS = 4


def ascii_text(text: str) -> str:
    """Text OpenCV's Hershey fonts can draw: accents dropped, other non-ASCII characters as '?'."""
    return unicodedata.normalize("NFKD", str(text)).encode("ascii", "replace").decode("ascii")


def _fit(text: str, width: int) -> str:
    """The text, cut with '...' to fit `width` pixels."""
    text = ascii_text(text)
    while len(text) > 4 and cv2.getTextSize(text, FONT, SCALE, 1)[0][0] > width:
        text = text[:-4] + "..."
    return text


def top_lines(probs: np.ndarray, classes: Sequence[str], k: int = 3) -> list[str]:
    """'1. cat 0.912' for the k most likely classes."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [f"{i + 1}. {classes[c]} {probs[c]:.3f}" for i, c in enumerate(order)]


def overlay(image: np.ndarray, heat: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """uint8 (C, H, W) image and (H, W) heat map in [0, 1] -> an RGB uint8 picture: the image, the image with the
    heat map blended over it (jet: red is the strongest evidence), and `lines` of text under both."""
    rgb = np.repeat(image, 3, 0) if image.shape[0] == 1 else image[:3]
    rgb = np.ascontiguousarray(rgb.transpose(1, 2, 0))
    h, w = rgb.shape[:2]
    scale = max(1, -(-PANEL // max(h, w)))
    big = cv2.resize(rgb, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
    heat_big = cv2.resize(np.clip(heat, 0, 1).astype(np.float32), (w * scale, h * scale),
                          interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.rint(heat_big * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    blend = np.rint((1 - HEAT_WEIGHT) * big + HEAT_WEIGHT * colour).astype(np.uint8)
    ph, pw = big.shape[:2]
    width = 2 * pw + GAP
    canvas = np.full((ph + LINE * len(lines) + 8, width, 3), 255, np.uint8)
    canvas[:ph, :pw], canvas[:ph, pw + GAP:] = big, blend
    for i, line in enumerate(lines):
        cv2.putText(canvas, _fit(line, width - 8), (4, ph + LINE * (i + 1)), FONT, SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def mosaic(pictures: Sequence[np.ndarray], total: int) -> np.ndarray:
    """The first MOSAIC_LIMIT pictures in a grid of MOSAIC_COLUMNS, under a title saying how many of `total`."""
    shown = list(pictures[:MOSAIC_LIMIT])
    h, w = max(p.shape[0] for p in shown), max(p.shape[1] for p in shown)
    columns = min(MOSAIC_COLUMNS, len(shown))
    rows = -(-len(shown) // columns)
    title = LINE + 12
    canvas = np.full((title + rows * (h + GAP), columns * (w + GAP) - GAP, 3), 255, np.uint8)
    for i, picture in enumerate(shown):
        top, left = title + (i // columns) * (h + GAP), (i % columns) * (w + GAP)
        canvas[top:top + picture.shape[0], left:left + picture.shape[1]] = picture
    what = f"{len(shown)} explanations" if len(shown) == total else \
        f"the first {len(shown)} of {total} explanations (mosaic.png shows at most {MOSAIC_LIMIT})"
    cv2.putText(canvas, _fit(what, canvas.shape[1] - 8), (4, LINE + 2), FONT, SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def write_png(path: Path, rgb: np.ndarray) -> None:
    """An RGB uint8 picture as a PNG, written atomically."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path.name} as PNG")
    write_text_atomic(path, data.tobytes())


def file_stem(text: str, limit: int = 60) -> str:
    """A file-name-safe stem for an image's overlay: its name's letters, digits, '.', '_' and '-'."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_text(Path(str(text)).stem)).strip("-.")
    return stem[:limit] or "image"
