"""What check learns from each image, in worker processes: its size, channels, mode and format, or why it cannot be
read (the training decoder, data/decode.py); a digest of its decoded pixels (exact duplicates); perceptual hashes
of it and of it slightly cropped (imagehash.phash) and gray 16x16 thumbnails that confirm a near duplicate."""
from __future__ import annotations

import hashlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from imgcls_cli.check.extras import require
from imgcls_cli.cores import usable_cores
from imgcls_cli.data.decode import DecodeError, canonical_pixels, decode_raw

import cv2  # noqa: E402,I001  (after data/decode.py, which sets OpenCV's pixel limit)

THUMB = 16  # side of the gray thumbnails whose correlation confirms a near duplicate
CHUNK = 512  # images a worker process is handed at a time
MAGIC = ((b"\x89PNG", "PNG"), (b"\xff\xd8", "JPEG"), (b"BM", "BMP"), (b"GIF8", "GIF"), (b"II*\x00", "TIFF"),
         (b"MM\x00*", "TIFF"))


@dataclass
class Analysed:
    """One row per image: what it is (error: why it could not be read, else ""), and its fingerprints."""

    error: list[str]
    width: np.ndarray
    height: np.ndarray
    channels: np.ndarray
    mode: list[str]
    format: list[str]
    digest: list[str]
    hashes: np.ndarray  # uint64 (N, 2): phash of the image, and of it with `crop` cut off each side
    thumbs: np.ndarray  # float16 (N, 2, THUMB * THUMB): zero-mean, unit-norm gray thumbnails of the same two

    @property
    def readable(self) -> np.ndarray:
        return np.array([not e for e in self.error], dtype=bool)


def file_format(path: Path) -> str:
    """The format a file's first bytes declare (PNG, JPEG, BMP, GIF, TIFF, WEBP), else its extension."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        head = b""
    for magic, name in MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return path.suffix.lstrip(".").upper() or "unknown"


def mode_of(image: np.ndarray) -> str:
    """L, LA, RGB or RGBA, with ;16 for 16-bit and ;F for float pixels."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    name = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}.get(channels, f"{channels}ch")
    depth = "" if image.dtype == np.uint8 else ";16" if image.dtype == np.uint16 else ";F"
    return name + depth


def _fingerprints(pixels: np.ndarray, crop: float) -> tuple[str, list[int], np.ndarray]:
    """(digest of the pixels, the two perceptual hashes, the two thumbnails) of uint8 gray or BGR pixels."""
    import imagehash
    from PIL import Image

    digest = hashlib.sha1(repr(pixels.shape).encode() + pixels.tobytes()).hexdigest()
    gray = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    dy, dx = int(round(h * crop)), int(round(w * crop))
    views = [gray, gray[dy:h - dy, dx:w - dx] if (dy or dx) and h > 2 * dy and w > 2 * dx else gray]
    hashes, thumbs = [], []
    for view in views:
        bits = imagehash.phash(Image.fromarray(np.ascontiguousarray(view))).hash.ravel()
        hashes.append(int.from_bytes(np.packbits(bits).tobytes(), "big"))
        t = cv2.resize(view, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
        t -= t.mean()
        thumbs.append(t / max(float(np.linalg.norm(t)), 1e-6))
    return digest, hashes, np.stack(thumbs)


def _analyse(items: Sequence[Any], crop: float) -> list[tuple]:
    """Each item (a path, or a uint8 (C, H, W) array): (error, width, height, channels, mode, format, digest,
    hashes, thumbs)."""
    rows = []
    for item in items:
        if isinstance(item, np.ndarray):
            raw = item[0] if item.shape[0] == 1 else np.ascontiguousarray(item.transpose(1, 2, 0)[:, :, ::-1])
            fmt = "array"
        else:
            try:
                raw = decode_raw(item)
            except DecodeError as exc:
                rows.append((str(exc), 0, 0, 0, "", file_format(Path(item)), "", [0, 0], None))
                continue
            fmt = file_format(Path(item))
        pixels = canonical_pixels(raw)
        digest, hashes, thumbs = _fingerprints(pixels, crop)
        channels = 1 if raw.ndim == 2 else raw.shape[2]
        rows.append(("", raw.shape[1], raw.shape[0], channels, mode_of(raw), fmt, digest, hashes, thumbs))
    return rows


def analyse(items: Sequence[Any], crop: float, workers: int | None = None) -> Analysed:
    """_analyse over the items, CHUNK at a time on a pool of processes (one per usable core)."""
    require("imagehash", "imgcls check")
    workers = workers or usable_cores()
    chunks = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(_analyse, chunks, [crop] * len(chunks)))
    else:
        parts = [_analyse(chunk, crop) for chunk in chunks]
    rows = [row for part in parts for row in part]
    blank = np.zeros((2, THUMB * THUMB), np.float32)
    return Analysed(
        error=[r[0] for r in rows], width=np.array([r[1] for r in rows], np.int64),
        height=np.array([r[2] for r in rows], np.int64), channels=np.array([r[3] for r in rows], np.int64),
        mode=[r[4] for r in rows], format=[r[5] for r in rows], digest=[r[6] for r in rows],
        hashes=np.array([r[7] for r in rows], dtype=np.uint64).reshape(-1, 2),
        thumbs=np.stack([blank if r[8] is None else r[8] for r in rows]).astype(np.float16) if rows
        else np.zeros((0, 2, THUMB * THUMB), np.float16))
