"""fashion_mnist_mosaic: a multi-label dataset of real images that needs no download.

Each image is a 2x2 mosaic (56x56, one channel) of Fashion-MNIST items: each of its four 28x28 cells is black
(empty) with probability dataset.empty_prob, else an item drawn at random (with replacement); its labels are the
set of classes present. Train mosaics (and the val split carved from them) use only Fashion-MNIST's train items,
test mosaics only its test items. The draws come from dataset.mosaic_seed, not the run's seed: every run sees the
same mosaics (the run's seed still chooses which train mosaics validate). Generated in a few vectorized steps.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from imgcls_cli.data.builders import DATASETS, FASHION_CLASSES, Source, idx_arrays, official_splits

GRID = 2  # cells a side
EMPTY = -1  # the item index of an empty cell


def mosaic_cells(num_mosaics: int, num_items: int, empty_prob: float, seed: int | list[int]) -> np.ndarray:
    """int64 (num_mosaics, 4): the item in each cell (row-major: top-left, top-right, bottom-left, bottom-right),
    EMPTY for a black one."""
    rng = np.random.default_rng(seed)
    items = rng.integers(0, num_items, size=(num_mosaics, GRID * GRID))
    items[rng.random((num_mosaics, GRID * GRID)) < empty_prob] = EMPTY
    return items


def make_mosaics(images: np.ndarray, labels: np.ndarray, cells: np.ndarray,
                 num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, C, 2H, 2W) mosaics of images (M, C, H, W) laid out as `cells` says, and their uint8 (N, classes)
    multi-hot labels (the classes of the items present)."""
    n, (channels, height, width) = len(cells), images.shape[1:]
    present = cells != EMPTY
    tiles = images[np.where(present, cells, 0)]  # (N, 4, C, H, W)
    tiles[~present] = 0
    mosaics = (tiles.reshape(n, GRID, GRID, channels, height, width).transpose(0, 3, 1, 4, 2, 5)
               .reshape(n, channels, GRID * height, GRID * width))
    multi_hot = np.zeros((n, num_classes), np.uint8)
    rows = np.broadcast_to(np.arange(n)[:, None], cells.shape)
    multi_hot[rows[present], labels[cells[present]]] = 1
    return np.ascontiguousarray(mosaics), multi_hot


@DATASETS.register("fashion_mnist_mosaic")
def fashion_mnist_mosaic(*, seed: int, root: str | None = None, download: bool = False, val_fraction: float = 0.1,
                         num_train: int = 20000, num_test: int = 4000, empty_prob: float = 0.3,
                         mosaic_seed: int = 0, **_: Any) -> Source:
    """2x2 mosaics of Fashion-MNIST items (56x56): labels = the classes present; a multi-label dataset."""
    data = idx_arrays("fashion_mnist", root, bool(download))
    made = {}
    for stream, (split, count) in enumerate((("train", num_train), ("test", num_test))):
        images, labels = data[split]
        cells = mosaic_cells(count, len(images), empty_prob, [mosaic_seed, stream])
        made[split] = make_mosaics(images, labels, cells, len(FASHION_CLASSES))
    return official_splits(made, list(FASHION_CLASSES), val_fraction, seed)
