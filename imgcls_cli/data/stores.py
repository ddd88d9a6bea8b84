"""Image stores for data that does not live as one tensor on the device: files decoded on demand, or a uint8
array (a decoded cache on disk, a dataset too large at the training size) read and resized a batch at a time.

A store is indexed with an array of positions and returns (uint8 images (n, C, S, S), ok mask (n,)); batches are
gathered in DataLoader workers (data/loader.py's StreamLoader).
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from imgcls_cli.data.decode import DecodeError, decode_image
from imgcls_cli.data.pixels import convert_channels, resize_batch
from imgcls_cli.errors import UserError

log = logging.getLogger("imgcls")


class Store(Protocol):
    channels: int
    size: int

    def __len__(self) -> int: ...

    def take(self, positions: np.ndarray) -> "Store": ...

    def load(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def name(self, position: int) -> str: ...

    def why(self, position: int) -> str: ...


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

    def why(self, position: int) -> str:
        """Why the file at position did not load (it is read again: the batch was read in another process)."""
        try:
            decode_image(self.paths[position], self.channels, self.size)
        except DecodeError as exc:
            return str(exc)
        return "not a decodable image"


class ArrayStore:
    """Rows of a uint8 (N, C, H, W) array or memmap, resized and converted to the training shape per batch."""

    def __init__(self, array: np.ndarray, index: np.ndarray, channels: int, size: int) -> None:
        self.array, self.index, self.channels, self.size = array, np.asarray(index, np.int64), channels, size

    def __len__(self) -> int:
        return len(self.index)

    def take(self, positions: np.ndarray) -> ArrayStore:
        return ArrayStore(self.array, self.index[positions], self.channels, self.size)

    def load(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = self.index[positions]
        order = np.argsort(rows, kind="stable")  # sorted reads: a memmap reads forward on the disk
        batch = np.empty((len(rows), *self.array.shape[1:]), np.uint8)
        batch[order] = self.array[rows[order]]
        return convert_channels(resize_batch(batch, self.size), self.channels), np.ones(len(rows), bool)

    def name(self, position: int) -> str:
        return str(int(self.index[position]))

    def why(self, position: int) -> str:
        return "not readable"


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


CACHE_FORMAT = 2
FINGERPRINT_BLOCKS, FINGERPRINT_BLOCK_BYTES = 16, 64 * 1024


def _fingerprint(path: Path, size: int) -> str:
    """sha256 of 16 blocks of 64 KB spread over the file (its start and end among them): cheap to check on every
    run, and it changes when the file is cut short, zero-filled or overwritten in a block it reads."""
    digest = hashlib.sha256(str(size).encode())
    step = max(1, (size - FINGERPRINT_BLOCK_BYTES) // max(1, FINGERPRINT_BLOCKS - 1))
    with open(path, "rb") as f:
        for i in range(FINGERPRINT_BLOCKS):
            f.seek(min(i * step, max(0, size - FINGERPRINT_BLOCK_BYTES)))
            digest.update(f.read(FINGERPRINT_BLOCK_BYTES))
    return digest.hexdigest()


def _read_cache(data: Path, meta: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, list[tuple[int, str]]] | str:
    """The cache and its bad files when it is whole, else why it cannot be used. The marker (meta) is written
    last, so a build that stopped half-way has none; its size and fingerprint catch a file damaged since."""
    if not meta.is_file():
        return "it has no completion marker: its build did not finish"
    try:
        info = json.loads(meta.read_text())
        expected, fingerprint, bad = int(info["bytes"]), str(info["fingerprint"]), info["bad"]
        bad = [(int(i), str(why)) for i, why in bad]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its completion marker {meta.name} is unreadable ({type(exc).__name__})"
    if info.get("format") != CACHE_FORMAT or tuple(info.get("shape", ())) != shape:
        return "it was written in another layout"
    try:
        size = data.stat().st_size
        if size != expected:
            return f"it is {size} bytes, not the {expected} it was written with"
        if _fingerprint(data, size) != fingerprint:
            return "its content changed since it was written"
        array = np.load(data, mmap_mode="r")
    except (OSError, ValueError) as exc:
        return f"it cannot be read ({exc})"
    if array.shape != shape or array.dtype != np.uint8:
        return f"it holds {array.dtype} {array.shape}, not uint8 {shape}"
    return array, bad


def _remove(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _remove_stale_partials(folder: Path, key: str) -> None:
    """Partial files of builds whose process is gone (killed half-way)."""
    for partial in folder.glob(f"{key}.*.partial-*"):
        try:
            pid = int(partial.name.rsplit("-", 1)[1])
            if pid != os.getpid():
                os.kill(pid, 0)
                continue
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        _remove(partial)


def _preallocate(path: Path) -> None:
    """Give the (sparse) memmap file its blocks now: a full disk then fails here with ENOSPC, instead of
    killing the process with SIGBUS when a page of the memmap is written."""
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise


def decoded_cache(paths: list[Path], channels: int, size: int, folder: Path,
                  workers: int | None = None) -> tuple[np.ndarray, list[tuple[int, str]], bool]:
    """A uint8 memmap (N, C, S, S) of every file decoded at the training size, and the (position, reason) of the
    files that did not decode; built once (on a thread pool), then reused while the files stay the same.

    Returns (memmap, bad files, whether it was built now). The memmap is written under a temporary name, its
    disk space reserved first, and moved into place whole; a completion marker (KEY.json: shape, byte size and a
    fingerprint of the file) is written last. A cache without its marker, or that no longer matches it, is
    rebuilt (with a warning); a build that cannot be written is one line, and leaves no partial file behind.
    """
    from imgcls_cli.data.files import decode_into

    shape = (len(paths), channels, size, size)
    key = cache_key(paths, channels, size)
    data, meta = folder / f"{key}.npy", folder / f"{key}.json"
    nbytes = int(np.prod(shape))
    hint = ("free space there, set dataset.cache_dir=FOLDER on a disk with room (and write access), or "
            "dataset.cache=false")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the decoded cache folder {folder}: {exc.strerror or exc}; {hint}.") from None
    if data.exists() or meta.exists():
        found = _read_cache(data, meta, shape)
        if not isinstance(found, str):
            return found[0], found[1], False
        log.warning(f"decoded cache {data} is not usable ({found}): rebuilding it")
        try:
            _remove(data, meta)
        except OSError as exc:
            raise UserError(f"decoded cache {data} is damaged ({found}) and cannot be removed "
                            f"({exc.strerror or exc}); delete {data} and {meta}, or set dataset.cache=false.") from None
    _remove_stale_partials(folder, key)
    partial = folder / f"{key}.npy.partial-{os.getpid()}"
    tmp_meta = folder / f"{key}.json.partial-{os.getpid()}"
    array = None
    try:
        array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
        _preallocate(partial)
        errors = decode_into(array, paths, workers)
        array.flush()
        del array  # closes the memmap before it is moved into place
        array = None
        bad = [(i, e) for i, e in enumerate(errors) if e is not None]
        written = partial.stat().st_size
        fingerprint = _fingerprint(partial, written)
        os.replace(partial, data)
        tmp_meta.write_text(json.dumps({"format": CACHE_FORMAT, "shape": list(shape), "bytes": written,
                                        "fingerprint": fingerprint, "files": len(paths), "channels": channels,
                                        "size": size, "bad": bad}))
        os.replace(tmp_meta, meta)
    except OSError as exc:
        del array
        _remove(partial, tmp_meta, data, meta)
        raise UserError(f"cannot write the decoded cache {data} ({nbytes / 1e6:.0f} MB): {exc.strerror or exc}; "
                        f"{hint}.") from None
    except BaseException:
        del array
        _remove(partial, tmp_meta)
        raise
    return np.load(data, mmap_mode="r"), bad, True
