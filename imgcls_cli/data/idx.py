"""MNIST-style datasets in IDX files (raw or .gz): finding them, downloading them, reading them."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from imgcls_cli.errors import UserError

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into an array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file (bad magic number).")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[data[2]])
    count = int(np.prod(dims)) if dims else 0
    offset = 4 + 4 * ndim
    if len(data) - offset < count * dtype.itemsize:
        raise UserError(f"{path} is truncated: expected {count} values of shape {dims}.")
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def find_files(candidates: list[Path]) -> dict[str, tuple[Path, Path]] | None:
    """The first folder among candidates that holds all four IDX files."""
    for folder in candidates:
        found = {split: (_find(folder, images), _find(folder, labels)) for split, (images, labels) in FILES.items()}
        if all(p is not None for pair in found.values() for p in pair):
            return found  # type: ignore[return-value]
    return None


def load_idx_dataset(candidates: list[Path]) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """{split: (uint8 images (N, 1, H, W), int64 labels)} from the first candidate folder that has the files."""
    found = find_files(candidates)
    if found is None:
        return None
    out = {}
    for split, (images_path, labels_path) in found.items():
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(f"{images_path} and {labels_path} do not hold matching images and labels.")
        out[split] = (np.ascontiguousarray(images.astype(np.uint8)[:, None]), labels.astype(np.int64))
    return out
