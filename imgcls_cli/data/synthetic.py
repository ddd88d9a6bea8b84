"""The built-in synthetic dataset, generated with numpy: oriented stripes, rings, checkerboards and noise
(dataset.pattern=textures, the default), or a class-giving patch on noise (pattern=patch, data/patches.py)."""
from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np

from imgcls_cli.data.patches import PATCH_CLASSES, make_patches
from imgcls_cli.registry import Registry

CLASS_NAMES: tuple[str, ...] = (
    "horizontal",
    "vertical",
    "diagonal",
    "circular",
    "noise",
    "anti_diagonal",
    "checkerboard",
    "horizontal_fine",
    "vertical_fine",
    "rings_fine",
)

# Frequency bands in cycles per pixel (periods of 8-14 px and 3.3-4.5 px): the gap keeps coarse and fine apart.
_COARSE = (0.07, 0.12)
_FINE = (0.22, 0.30)
_TWO_PI = 2.0 * np.pi

Pattern = Callable[[int, int, np.random.Generator], np.ndarray]


def make_synthetic(
    num_samples: int, num_classes: int, image_size: int, channels: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, channels, size, size) and labels int64 (N,) of the first `num_classes` patterns, balanced."""
    _validate(num_samples, num_classes, image_size, channels)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_samples) % num_classes).astype(np.int64)
    patterns = np.empty((num_samples, image_size, image_size), dtype=np.float32)
    for label, name in enumerate(CLASS_NAMES[:num_classes]):
        index = np.flatnonzero(labels == label)
        patterns[index] = _PATTERNS[name](index.size, image_size, rng)
    return _render(_standardize(patterns), channels, rng), labels


def _validate(num_samples: int, num_classes: int, image_size: int, channels: int) -> None:
    if not 2 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f"num_classes must be between 2 and {len(CLASS_NAMES)}, got {num_classes}")
    if num_samples < num_classes:
        raise ValueError(f"num_samples ({num_samples}) must be at least num_classes ({num_classes})")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")


def _uniform(rng: np.random.Generator, low: float, high: float, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(low, high, shape).astype(np.float32)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (y, x), each (size, size) float32."""
    y, x = np.mgrid[0:size, 0:size]
    return y.astype(np.float32), x.astype(np.float32)


def _wave(coordinate: np.ndarray, band: tuple[float, float], rng: np.random.Generator, count: int) -> np.ndarray:
    """sin(2 pi f u + phase) with f drawn from `band` and a random phase per sample."""
    frequency = _uniform(rng, *band, (count, 1, 1))
    phase = _uniform(rng, 0.0, _TWO_PI, (count, 1, 1))
    return np.sin(_TWO_PI * frequency * coordinate + phase)


def _stripes(count: int, size: int, rng: np.random.Generator, angle: float, band: tuple[float, float]) -> np.ndarray:
    """Stripes whose wave vector points at `angle` degrees (90: horizontal stripes)."""
    y, x = _grid(size)
    radians = np.deg2rad(angle)
    return _wave(np.cos(radians) * x + np.sin(radians) * y, band, rng, count)


def _rings(count: int, size: int, rng: np.random.Generator, band: tuple[float, float]) -> np.ndarray:
    """Concentric rings around a centre jittered near the middle."""
    y, x = _grid(size)
    centre = (size - 1) / 2.0 + _uniform(rng, -0.1 * size, 0.1 * size, (2, count, 1, 1))
    return _wave(np.hypot(y - centre[0], x - centre[1]), band, rng, count)


def _checkerboard(count: int, size: int, rng: np.random.Generator, band: tuple[float, float]) -> np.ndarray:
    y, x = _grid(size)
    return _wave(x, band, rng, count) * _wave(y, band, rng, count)


def _noise(count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((count, size, size), dtype=np.float32)


_PATTERNS: dict[str, Pattern] = {
    "horizontal": partial(_stripes, angle=90.0, band=_COARSE),
    "vertical": partial(_stripes, angle=0.0, band=_COARSE),
    "diagonal": partial(_stripes, angle=45.0, band=_COARSE),
    "circular": partial(_rings, band=_COARSE),
    "noise": _noise,
    "anti_diagonal": partial(_stripes, angle=-45.0, band=_COARSE),
    "checkerboard": partial(_checkerboard, band=_COARSE),
    "horizontal_fine": partial(_stripes, angle=90.0, band=_FINE),
    "vertical_fine": partial(_stripes, angle=0.0, band=_FINE),
    "rings_fine": partial(_rings, band=_FINE),
}


def _standardize(patterns: np.ndarray) -> np.ndarray:
    """Zero mean and unit std per sample (in place), so no class stands out by brightness or contrast."""
    std = patterns.std(axis=(1, 2), keepdims=True)
    patterns -= patterns.mean(axis=(1, 2), keepdims=True)
    patterns /= np.maximum(std, 1e-6)
    return patterns


def _render(patterns: np.ndarray, channels: int, rng: np.random.Generator) -> np.ndarray:
    """Random contrast, brightness, pixel noise and (for colour) per-channel gain, then uint8."""
    count, size = patterns.shape[0], patterns.shape[1]
    noise_level = _uniform(rng, 0.2, 0.5, (count, 1, 1, 1))
    contrast = _uniform(rng, 16.0, 32.0, (count, 1, 1, 1))
    brightness = _uniform(rng, 103.0, 153.0, (count, 1, 1, 1))
    # In-place arithmetic on one (N, C, H, W) buffer: large datasets would otherwise need several copies.
    values = rng.standard_normal((count, channels, size, size), dtype=np.float32)
    values *= noise_level
    values += patterns[:, None]
    values *= contrast
    values += brightness
    if channels == 3:
        values *= _uniform(rng, 0.8, 1.2, (count, 3, 1, 1))
    np.clip(values, 0.0, 255.0, out=values)
    return np.rint(values, out=values).astype(np.uint8)


# dataset.pattern -> the generator of (images, labels); each states its class names as `.classes`.
PATTERNS: Registry = Registry("synthetic pattern")


@PATTERNS.register("textures")
def textures(num_samples: int, num_classes: int, image_size: int, channels: int,
             seed: int) -> tuple[np.ndarray, np.ndarray]:
    return make_synthetic(num_samples, num_classes, image_size, channels, seed)


@PATTERNS.register("patch")
def patch(num_samples: int, num_classes: int, image_size: int, channels: int,
          seed: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels, _ = make_patches(num_samples, num_classes, image_size, channels, seed)
    return images, labels


textures.classes = CLASS_NAMES
patch.classes = PATCH_CLASSES
