"""The report's pictures: where an evaluated image's pixels come from (the split in memory or in its store, or
its file read with the project's decoder), and small base64 JPEGs of them, capped in size and number."""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np

from imgcls_cli.data.files import decode_into

import cv2  # noqa: E402,I001  (after data/decode.py, which sets OpenCV's pixel limit)

THUMB_SIZE = 48  # pixels of a thumbnail's longer side (a smaller image keeps its size; the page scales it up)
OVERLAY_SIZE = 340  # the same for an explanation's overlay (imgcls explain draws them about 330 px wide)
CELL_CAP = 24  # thumbnails of one confusion-matrix cell at most
MAX_THUMBNAILS = 2400  # thumbnails of one page at most: the cap per cell shrinks until the cells fit in it
MAX_EXPLANATIONS = 120  # overlays of one page at most
JPEG_QUALITY = 85


class ImageSource(Protocol):
    """Pixels of evaluated images by their key (predictions.csv's first column)."""

    def load(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """uint8 (C, H, W) images of the keys it has and can read; the others are left out."""
        ...


class SplitImages:
    """The evaluated images as the run holds them: a uint8 (N, C, H, W) array, or a function that reads positions
    of them, (positions) -> (uint8 pixels, whether each was read), as a store's load and Scored.pixels are."""

    def __init__(self, ids: Sequence[str], images: np.ndarray | Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
                 ) -> None:
        self.position = {str(k): i for i, k in enumerate(ids)}
        self.images = images

    def load(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found = [(k, self.position[k]) for k in keys if k in self.position]
        if not found:
            return {}
        positions = np.array([p for _, p in found], dtype=np.int64)
        if isinstance(self.images, np.ndarray):
            pixels, ok = self.images[positions], np.ones(len(found), bool)
        else:  # files decoded, or a memmap resized, for these positions alone
            pixels, ok = self.images(positions)
        return {k: np.asarray(pixels[i]) for i, (k, _) in enumerate(found) if ok[i]}


def split_images(split: Any) -> SplitImages:
    """The images of a data.datasets.Split: its uint8 tensor, or its store (data/stores.py)."""
    return SplitImages(split.ids, split.images.numpy() if split.in_memory else split.images.load)


class FileImages:
    """Image files by key, decoded (on a thread pool, at the thumbnail's size) with the project's decoder; a file
    that is gone or broken is left out."""

    def __init__(self, paths: Mapping[str, Path]) -> None:
        self.paths = dict(paths)

    def load(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found = [k for k in keys if k in self.paths]
        out = np.zeros((len(found), 3, THUMB_SIZE, THUMB_SIZE), np.uint8)
        errors = decode_into(out, [self.paths[k] for k in found]) if found else []
        return {k: out[i] for i, k in enumerate(found) if errors[i] is None}


def jpeg_base64(image: np.ndarray, size: int = THUMB_SIZE) -> str:
    """A uint8 (C, H, W) image (1 or 3 channels, RGB) as a base64 JPEG whose longer side is at most `size`."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    hwc = image[0] if image.shape[0] == 1 else cv2.cvtColor(np.ascontiguousarray(image[:3].transpose(1, 2, 0)),
                                                             cv2.COLOR_RGB2BGR)
    height, width = hwc.shape[:2]
    scale = size / max(height, width)
    if scale < 1:
        hwc = cv2.resize(hwc, (max(1, round(width * scale)), max(1, round(height * scale))),
                         interpolation=cv2.INTER_AREA)
    ok, buffer = cv2.imencode(".jpg", np.ascontiguousarray(hwc), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("OpenCV could not encode a thumbnail")
    return base64.b64encode(buffer.tobytes()).decode("ascii")


def cell_cap(counts: Iterable[int], cap: int = CELL_CAP, budget: int = MAX_THUMBNAILS) -> int:
    """The thumbnails one cell shows at most: `cap`, less while all the cells together would show more than
    `budget`, and at least 1 (then the largest cells have theirs until the budget is spent)."""
    counts = [int(n) for n in counts if n]
    while cap > 1 and sum(min(n, cap) for n in counts) > budget:
        cap -= 1
    return cap
