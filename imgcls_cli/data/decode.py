"""Decode image files with OpenCV into uint8 (channels, H, W) arrays."""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
MAX_PIXELS = 89_478_485

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
_JPEG_SOS, _JPEG_EOI = 0xDA, b"\xff\xd9"


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


def _read_bytes(path: Path) -> np.ndarray:
    try:
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
    if _jpeg_truncated(data):
        raise DecodeError("truncated JPEG data")
    try:
        # Not IMREAD_UNCHANGED: it ignores EXIF orientation, so phone photos would come out rotated.
        # These flags still keep 16-bit and float pixels and grayscale; alpha is dropped as it is anyway.
        image = cv2.imdecode(buffer, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    except cv2.error:
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


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) declared by a PNG, JPEG, BMP or WebP header; None for other or unreadable headers."""
    for reader in (_png_size, _jpeg_size, _bmp_size, _webp_size):
        try:
            size = reader(data)
        except (struct.error, IndexError):
            size = None
        if size is not None:
            return size
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    for marker, offset in _jpeg_segments(data):
        if marker in _JPEG_SOF_MARKERS:
            height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
            return width, height
    return None


def _jpeg_truncated(data: bytes) -> bool:
    # Some libjpeg builds return a grey-filled image for cut-off files instead of failing.
    for marker, offset in _jpeg_segments(data):
        if marker == _JPEG_SOS:
            return _JPEG_EOI not in data[offset:]
    return False


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, int]]:
    """(marker, offset) of each JPEG header segment up to the first scan; stops quietly at anything odd."""
    if not data.startswith(b"\xff\xd8"):
        return
    offset = 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker == 0xFF:
            offset += 1
            continue
        if marker in _JPEG_STANDALONE_MARKERS:
            offset += 2
            continue
        yield marker, offset
        if marker == _JPEG_SOS:
            return
        offset += 2 + struct.unpack(">H", data[offset + 2 : offset + 4])[0]


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if not data.startswith(b"BM"):
        return None
    if struct.unpack("<I", data[14:18])[0] == 12:
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def _webp_size(data: bytes) -> tuple[int, int] | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = struct.unpack("<I", data[21:25])[0]
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


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
