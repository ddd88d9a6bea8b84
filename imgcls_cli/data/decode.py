"""Decode image files with OpenCV into uint8 (channels, H, W) arrays.

Every read goes through decode_image: a path that is not a regular file (a FIFO, a device, a socket) is refused
before it is opened, and an image whose header declares more than MAX_PIXELS pixels is refused before anything
is decoded: the headers of PNG, JPEG, BMP, WebP, TIFF, PNM/PFM, GIF, Sun raster, Radiance HDR and JPEG 2000 are
read by headers.py; for any other format OpenCV checks its own header against the same limit
(OPENCV_IO_MAX_IMAGE_PIXELS, set when this module loads OpenCV).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator

# Pillow's decompression-bomb limit (about 9459 x 9459; 268 MB as RGB): the most pixels an image may declare.
MAX_PIXELS = 89_478_485
# OpenCV reads this once, when it is loaded: its own header check (for the formats read below too) then refuses
# what MAX_PIXELS refuses, before it allocates the image. A smaller limit the user set is kept.
_opencv_limit = os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "")
if not (_opencv_limit.isdigit() and 0 < int(_opencv_limit) <= MAX_PIXELS):
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(MAX_PIXELS)

import cv2  # noqa: E402
import numpy as np  # noqa: E402

# OpenCV's own thread pool is not fork-safe: a DataLoader worker forked after the pool has run deadlocks in OpenCV
# (changing its thread count in the child waits forever on the parent's pool). imgcls decodes many files at once
# (threads, DataLoader workers) rather than one image on many threads, so OpenCV works on the calling thread only.
cv2.setNumThreads(1)

from imgcls_cli.data.headers import declared_gray, jpeg_truncated  # noqa: E402
from imgcls_cli.data.headers import declared_size as _header_size  # noqa: E402  (tests stand in for an unread format)
from imgcls_cli.rundir import mode_kind  # noqa: E402

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


class DecodeError(Exception):
    """A file that cannot be turned into an image; the message says why in a few words."""


def decode_image(path: str | Path, channels: int, size: int | tuple[int, int] | None) -> np.ndarray:
    """Decode an image file to uint8 (channels, H, W), RGB for 3 channels, resized to `size` (h, w) if given."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    target = _target_size(size)
    buffer = _read_bytes(Path(path))
    image = _decode_buffer(buffer)
    image = _to_uint8(_drop_alpha(image))
    if target is not None:
        image = _resize(image, *target)
    return _to_channels_first(image, channels)


def convert_array(image: np.ndarray, channels: int, size: int | tuple[int, int] | None) -> np.ndarray:
    """An image in memory, RGB(A) (H, W, 3|4) or gray (H, W), uint8, uint16 or float, to what decode_image gives for
    a file holding it: uint8 (channels, H, W), resized to `size`."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    image = _drop_alpha(np.asarray(image))
    if image.ndim == 3:
        image = image[:, :, ::-1]  # OpenCV's BGR, as a decoded file is
    image = _to_uint8(image)
    target = _target_size(size)
    if target is not None:
        image = _resize(np.ascontiguousarray(image), *target)
    return _to_channels_first(image, channels)
def decode_raw(path: str | Path) -> np.ndarray:
    """A file's pixels as OpenCV decodes them, checked as decode_image checks them: gray (H, W) or BGR(A) (H, W, C),
    8- or 16-bit or float (imgcls check reports the mode, then hashes canonical_pixels of it)."""
    return _decode_buffer(_read_bytes(Path(path)))


def canonical_pixels(image: np.ndarray) -> np.ndarray:
    """uint8 gray (H, W) or BGR (H, W, 3) as decode_image sees a decoded image before resizing: alpha dropped,
    16-bit and float scaled to 8 bits, and a colour image whose channels are equal made gray."""
    image = _to_uint8(_drop_alpha(image))
    if image.ndim == 3 and (image[:, :, 0] == image[:, :, 1]).all() and (image[:, :, 1] == image[:, :, 2]).all():
        return np.ascontiguousarray(image[:, :, 0])
    return np.ascontiguousarray(image)


def list_images(root: str | Path) -> list[Path]:
    """All image files under `root` (recursively, sorted), skipping hidden files and folders."""
    root = Path(root)
    if root.is_file():
        return [root] if _is_image_name(root.name) else []
    if not root.is_dir():
        raise FileNotFoundError(f"no such file or directory: {root}")
    return sorted(_walk_images(root))


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk_images(root: Path) -> Iterator[Path]:
    # Folder links are followed (datasets are often assembled from links), except back into their own ancestors.
    ancestors = {str(root): frozenset[str]()}
    for folder, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        above = ancestors.pop(folder)
        if real in above:
            dirnames.clear()
            continue
        dirnames[:] = [name for name in dirnames if not name.startswith(".")]
        ancestors.update((os.path.join(folder, name), above | {real}) for name in dirnames)
        for name in filenames:
            full = os.path.join(folder, name)
            if not name.startswith(".") and _is_image_name(name) and os.path.isfile(full):
                yield Path(full)


def _target_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    height, width = (size, size) if isinstance(size, (int, np.integer)) else size
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size}")
    return int(height), int(width)


def check_regular_file(path: str | Path) -> None:
    """DecodeError unless path is a regular file (links followed): reading a FIFO or a device could block forever
    or never end, so they are refused before they are opened."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except OSError as error:
        raise DecodeError(f"cannot read file ({error.strerror or error})") from None
    if stat.S_ISDIR(mode):
        raise DecodeError("is a folder, not a file")
    what = mode_kind(mode)
    if what:
        raise DecodeError(f"is {'a FIFO (named pipe)' if what == 'a FIFO' else what}, not a regular file")


def _read_bytes(path: Path) -> np.ndarray:
    check_regular_file(path)
    try:
        with open(path, "rb") as f:  # the header first: a huge declared image is refused before the file is read
            declared = _header_size(f.read(HEADER_BYTES))
        if declared is not None:
            _check_pixels(*declared)
        buffer = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except IsADirectoryError:
        raise DecodeError("is a folder, not a file") from None
    except OSError as error:
        raise DecodeError(f"cannot read file ({error.strerror or error})") from None
    if buffer.size == 0:
        raise DecodeError("empty file")
    return buffer


def _decode_buffer(buffer: np.ndarray) -> np.ndarray:
    data = buffer.tobytes()
    declared = _header_size(data)
    if declared is not None:
        _check_pixels(*declared)
    if jpeg_truncated(data):
        raise DecodeError("truncated JPEG data")
    try:
        # Not IMREAD_UNCHANGED: it ignores EXIF orientation, so phone photos would come out rotated.
        # These flags still keep 16-bit and float pixels and grayscale; alpha is dropped as it is anyway.
        image = cv2.imdecode(buffer, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    except cv2.error as error:
        if "CV_IO_MAX_IMAGE" in str(error):  # OpenCV's own header check, for a format not read above
            raise DecodeError(f"image declares more pixels than the limit {MAX_PIXELS}") from None
        image = None
    if image is None or image.size == 0:
        raise DecodeError("not a decodable image")
    _check_pixels(image.shape[1], image.shape[0])
    return image


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise DecodeError(
            f"image is {width}x{height} = {width * height} pixels, more than the limit {MAX_PIXELS}"
        )


def header_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) a file's header declares (PNG, JPEG, BMP, WebP, TIFF), reading at most its first 256 KB
    (a JPEG's frame header can follow large EXIF data); None when the header is not one of these or unreadable."""
    try:
        check_regular_file(path)
        with open(path, "rb") as f:
            return _header_size(f.read(HEADER_BYTES))
    except (DecodeError, OSError):
        return None


HEADER_BYTES = 256 * 1024


def image_header(path: str | Path) -> tuple[int, int, bool | None] | None:
    """(width, height, gray) a file's header declares; gray is None when the header does not tell (a colour
    JPEG may hold gray pixels, a palette may be gray); None for a header not read here."""
    try:
        check_regular_file(path)
        with open(path, "rb") as f:
            data = f.read(4096)  # enough for every header but a JPEG's after large EXIF data
            size = _header_size(data)
            if size is None and data.startswith(b"\xff\xd8") and len(data) == 4096:
                data += f.read(HEADER_BYTES - len(data))
                size = _header_size(data)
    except (DecodeError, OSError):
        return None
    return None if size is None else (*size, declared_gray(data))


def image_shape(path: str | Path) -> tuple[int, int, bool]:
    """(width, height, gray) of a file by decoding it: gray when it has one channel or equal colour channels."""
    image = _drop_alpha(_decode_buffer(_read_bytes(Path(path))))
    gray = image.ndim == 2 or bool((image[:, :, 0] == image[:, :, 1]).all() and (image[:, :, 1] == image[:, :, 2]).all())
    return image.shape[1], image.shape[0], gray


def _drop_alpha(image: np.ndarray) -> np.ndarray:
    """Gray (H, W) or BGR (H, W, 3)."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] in (1, 2):
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return image[:, :, :3]
    raise DecodeError(f"unsupported image layout {image.shape}")


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        image = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        scale = 255.0 if image.max() <= 1.0 else 1.0
        return np.rint(np.clip(image * scale, 0.0, 255.0)).astype(np.uint8)
    raise DecodeError(f"unsupported pixel type {image.dtype}")


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    source_height, source_width = image.shape[:2]
    if (height, width) == (source_height, source_width):
        return image
    if (height - source_height) * (width - source_width) < 0:
        # One axis shrinks while the other grows: resample each axis with its own filter.
        image = cv2.resize(image, (source_width, height), interpolation=_interpolation(height, source_height))
        return cv2.resize(image, (width, height), interpolation=_interpolation(width, source_width))
    growing = height > source_height or width > source_width
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR if growing else cv2.INTER_AREA)


def _interpolation(target: int, source: int) -> int:
    return cv2.INTER_LINEAR if target > source else cv2.INTER_AREA


def _to_channels_first(image: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1:
        gray = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2GRAY)
        return np.ascontiguousarray(gray[None])
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[None], 3, axis=0))
    return np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))
