"""Image stores for data that does not live as one tensor on the device: files decoded on demand, or a uint8
array (a decoded cache on disk, a dataset too large at the training size) read and resized a batch at a time.

A store is indexed with an array of positions and returns (uint8 images (n, C, S, S), ok mask (n,)); batches are
gathered in DataLoader workers (data/loader.py's StreamLoader).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from imgcls_cli.data.decode import DecodeError, decode_image


class Store(Protocol):
    channels: int
    size: int

    def __len__(self) -> int: ...

    def take(self, positions: np.ndarray) -> "Store": ...

    def load(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def name(self, position: int) -> str: ...


class FileStore:
    """Image files decoded (and resized once, to the training size) when a batch asks for them."""

    def __init__(self, paths: list[Path], channels: int, size: int) -> None:
        self.paths, self.channels, self.size = list(paths), channels, size

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, positions: np.ndarray) -> FileStore:
        return FileStore([self.paths[i] for i in positions], self.channels, self.size)

    def load(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = np.zeros((len(positions), self.channels, self.size, self.size), np.uint8)
        ok = np.ones(len(positions), bool)
        for row, i in enumerate(positions):
            try:
                out[row] = decode_image(self.paths[i], self.channels, self.size)
            except DecodeError:
                ok[row] = False
        return out, ok

    def name(self, position: int) -> str:
        return str(self.paths[position])


class ArrayStore:
    """Rows of a uint8 (N, C, H, W) array or memmap, resized and converted to the training shape per batch."""

    def __init__(self, array: np.ndarray, index: np.ndarray, channels: int, size: int) -> None:
        self.array, self.index, self.channels, self.size = array, np.asarray(index, np.int64), channels, size

    def __len__(self) -> int:
        return len(self.index)

    def take(self, positions: np.ndarray) -> ArrayStore:
        return ArrayStore(self.array, self.index[positions], self.channels, self.size)

    def load(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from imgcls_cli.data.datasets import convert_channels, resize_batch

        rows = self.index[positions]
        order = np.argsort(rows, kind="stable")  # sorted reads: a memmap reads forward on the disk
        batch = np.empty((len(rows), *self.array.shape[1:]), np.uint8)
        batch[order] = self.array[rows[order]]
        return convert_channels(resize_batch(batch, self.size), self.channels), np.ones(len(rows), bool)

    def name(self, position: int) -> str:
        return str(int(self.index[position]))


# ---------------------------------------------------------------------------------------------- decoded cache
def cache_key(paths: list[Path], channels: int, size: int) -> str:
    """Changes when any file is added, removed, resized or touched, or the training shape changes."""
    digest = hashlib.sha256(f"{channels}x{size}\n".encode())
    for path in paths:
        try:
            st = os.stat(path)
            digest.update(f"{os.path.abspath(path)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{os.path.abspath(path)}\tmissing\n".encode())
    return digest.hexdigest()[:24]


def decoded_cache(paths: list[Path], channels: int, size: int, folder: Path,
                  workers: int | None = None) -> tuple[np.ndarray, list[tuple[int, str]], bool]:
    """A uint8 memmap (N, C, S, S) of every file decoded at the training size, and the (position, reason) of the
    files that did not decode; built once (on a thread pool), then reused while the files stay the same.

    Returns (memmap, bad files, whether it was built now). The memmap is written under a temporary name and
    moved into place whole, so an interrupted build leaves nothing that a later run would trust.
    """
    from imgcls_cli.data.files import decode_into

    folder.mkdir(parents=True, exist_ok=True)
    key = cache_key(paths, channels, size)
    data, meta = folder / f"{key}.npy", folder / f"{key}.json"
    if data.is_file() and meta.is_file():
        bad = [(int(i), str(why)) for i, why in json.loads(meta.read_text())["bad"]]
        return np.load(data, mmap_mode="r"), bad, False
    partial = folder / f"{key}.npy.partial-{os.getpid()}"
    array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8,
                                      shape=(len(paths), channels, size, size))

    errors = decode_into(array, paths, workers)
    array.flush()
    del array  # closes the memmap before it is moved into place
    bad = [(i, e) for i, e in enumerate(errors) if e is not None]
    os.replace(partial, data)
    tmp_meta = meta.with_suffix(f".json.partial-{os.getpid()}")
    tmp_meta.write_text(json.dumps({"files": len(paths), "channels": channels, "size": size, "bad": bad}))
    os.replace(tmp_meta, meta)
    return np.load(data, mmap_mode="r"), bad, True
