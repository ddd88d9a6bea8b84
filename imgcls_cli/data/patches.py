"""The synthetic `patch` pattern (dataset=synthetic dataset.pattern=patch): noise everywhere, and one small patch at
a random place whose shape and colour alone give the class. The only evidence of the class is inside the patch,
and each image's patch box is known, so a heat map can be checked against it."""
from __future__ import annotations

import numpy as np

PATCH_CLASSES: tuple[str, ...] = (
    "solid", "frame", "plus", "cross", "checker", "stripes_h", "stripes_v", "dot", "triangle", "corners",
)
# Each class's colour (RGB) where the image has 3 channels; with one channel the shapes alone tell the classes.
COLOURS = np.array([
    (230, 40, 40), (40, 200, 40), (60, 90, 255), (240, 220, 30), (220, 50, 220),
    (30, 220, 230), (255, 140, 0), (150, 70, 255), (250, 250, 250), (140, 255, 120),
], dtype=np.float32)


def patch_side(image_size: int) -> int:
    """The patch's side in pixels: a quarter of the image (8 px at 32), at least 3."""
    return max(3, image_size // 4)


def _masks(side: int) -> np.ndarray:
    """(10, side, side) booleans: where each class's shape is lit inside its patch."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    c = (side - 1) / 2.0
    half = max(1.0, side / 6.0)  # half the width of a bar
    edge = max(1, side // 4)
    period = max(2, side // 4)  # stripes of `period` px on, `period` px off
    return np.stack([
        np.ones((side, side), bool),                                              # solid
        (np.minimum(np.minimum(x, y), np.minimum(side - 1 - x, side - 1 - y)) < edge),  # frame
        (np.abs(x - c) < half) | (np.abs(y - c) < half),                          # plus
        (np.abs(x - y) < half) | (np.abs(x + y - (side - 1)) < half),             # cross
        ((x // max(1, side // 2)) + (y // max(1, side // 2))) % 2 == 0,           # checker (2 x 2)
        (y // period) % 2 == 0,                                                   # stripes_h
        (x // period) % 2 == 0,                                                   # stripes_v
        np.hypot(x - c, y - c) <= side / 3.0,                                     # dot
        x <= y,                                                                   # triangle
        (np.abs(x - c) > side / 4.0) & (np.abs(y - c) > side / 4.0),              # corners
    ])


def make_patches(num_samples: int, num_classes: int, image_size: int, channels: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images uint8 (N, channels, size, size), labels int64 (N,) (balanced, shuffled) and each image's patch box
    int64 (N, 4) as (top, left, bottom, right), bottom and right exclusive. The same seed gives the same three."""
    if not 2 <= num_classes <= len(PATCH_CLASSES):
        raise ValueError(f"num_classes must be between 2 and {len(PATCH_CLASSES)}, got {num_classes}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_samples) % num_classes).astype(np.int64)
    side = patch_side(image_size)
    tops = rng.integers(0, image_size - side + 1, num_samples)
    lefts = rng.integers(0, image_size - side + 1, num_samples)
    images = rng.integers(64, 192, (num_samples, channels, image_size, image_size), dtype=np.uint8)
    on = rng.uniform(0.85, 1.0, num_samples).astype(np.float32)  # the lit pixels' brightness, per image
    masks = _masks(side)
    colours = COLOURS if channels == 3 else np.full((len(COLOURS), 1), 230.0, np.float32)
    for i in range(num_samples):
        mask = masks[labels[i]]
        lit = colours[labels[i]][:, None, None] * on[i] * mask  # unlit pixels of the patch are black
        images[i, :, tops[i]:tops[i] + side, lefts[i]:lefts[i] + side] = np.rint(lit).astype(np.uint8)
    boxes = np.stack([tops, lefts, tops + side, lefts + side], axis=1).astype(np.int64)
    return images, labels, boxes
