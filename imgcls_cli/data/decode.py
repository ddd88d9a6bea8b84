"""Decode image files with OpenCV into uint8 (channels, H, W) arrays.

Every read goes through decode_image: a path that is not a regular file (a FIFO, a device, a socket) is refused
before it is opened, and an image whose header declares more than MAX_PIXELS pixels is refused before anything
is decoded: the headers of PNG, JPEG, BMP, WebP, TIFF, PNM/PFM, GIF, Sun raster, Radiance HDR and JPEG 2000 are
read here; for any other format OpenCV checks its own header against the same limit (OPENCV_IO_MAX_IMAGE_PIXELS,
set when this module loads OpenCV).
"""
from __future__ import annotations

import os
import stat
import struct
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

from imgcls_cli.rundir import mode_kind  # noqa: E402

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

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
    if _jpeg_truncated(data):
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
    return None if size is None else (*size, _header_gray(data))


def image_shape(path: str | Path) -> tuple[int, int, bool]:
    """(width, height, gray) of a file by decoding it: gray when it has one channel or equal colour channels."""
    image = _drop_alpha(_decode_buffer(_read_bytes(Path(path))))
    gray = image.ndim == 2 or bool((image[:, :, 0] == image[:, :, 1]).all() and (image[:, :, 1] == image[:, :, 2]).all())
    return image.shape[1], image.shape[0], gray


def _header_gray(data: bytes) -> bool | None:
    if data.startswith(_PNG_SIGNATURE) and len(data) > 25:
        return {0: True, 4: True, 2: False, 6: False}.get(data[25])
    try:
        for marker, offset in _jpeg_segments(data):
            if marker in _JPEG_SOF_MARKERS:
                return True if data[offset + 9] == 1 else None
    except (struct.error, IndexError):
        return None
    return None


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) declared by a PNG, JPEG, BMP, WebP or TIFF header; None for other or unreadable headers."""
    for reader in (_png_size, _jpeg_size, _bmp_size, _webp_size, _tiff_size, _pnm_size, _gif_size, _sun_size,
                   _hdr_size, _jp2_size):
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


_TIFF_WIDTH, _TIFF_LENGTH = 256, 257
_TIFF_SHORT, _TIFF_LONG, _TIFF_LONG8 = 3, 4, 16


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """The largest image of a TIFF's (or BigTIFF's) directories: OpenCV decodes the first, and a file may hold more."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None:
        return None
    version = struct.unpack(order + "H", data[2:4])[0]
    if version == 42:
        offset, count_fmt, entry_fmt, entry_size, next_fmt = struct.unpack(order + "I", data[4:8])[0], "H", "HHI", 12, "I"
    elif version == 43:
        offset, count_fmt, entry_fmt, entry_size, next_fmt = struct.unpack(order + "Q", data[8:16])[0], "Q", "HHQ", 20, "Q"
    else:
        return None
    best: tuple[int, int] | None = None
    seen: set[int] = set()
    while offset and offset not in seen and len(seen) < 64 and offset < len(data):
        seen.add(offset)
        count_size = struct.calcsize(count_fmt)
        (count,) = struct.unpack(order + count_fmt, data[offset:offset + count_size])
        start = offset + count_size
        size = {}
        for i in range(min(count, 4096)):
            entry = data[start + i * entry_size:start + (i + 1) * entry_size]
            tag, kind, _ = struct.unpack(order + entry_fmt, entry[:struct.calcsize(order + entry_fmt)])
            if tag in (_TIFF_WIDTH, _TIFF_LENGTH):
                value = entry[struct.calcsize(order + entry_fmt):]
                fmt = {_TIFF_SHORT: "H", _TIFF_LONG: "I", _TIFF_LONG8: "Q"}.get(kind)
                if fmt is None:
                    continue
                size[tag] = struct.unpack(order + fmt, value[:struct.calcsize(fmt)])[0]
        if _TIFF_WIDTH in size and _TIFF_LENGTH in size:
            found = (size[_TIFF_WIDTH], size[_TIFF_LENGTH])
            if best is None or found[0] * found[1] > best[0] * best[1]:
                best = found
        end = start + count * entry_size
        (offset,) = struct.unpack(order + next_fmt, data[end:end + struct.calcsize(next_fmt)])
    return best


_PNM_MAGICS = (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6", b"PF", b"Pf")


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    """PBM/PGM/PPM (P1-P6) and PFM (PF, Pf): the magic, then width and height as text (comments skipped)."""
    if data[:2] not in _PNM_MAGICS or data[2:3] not in (b" ", b"\t", b"\r", b"\n"):
        return None
    numbers: list[int] = []
    for line in data[2:4096].split(b"\n"):
        for token in line.split(b"#", 1)[0].split():
            if not token.isdigit():
                return None
            numbers.append(int(token))
            if len(numbers) == 2:
                return numbers[0], numbers[1]
    return None


def _gif_size(data: bytes) -> tuple[int, int] | None:
    if data[:6] not in (b"GIF87a", b"GIF89a"):
        return None
    return struct.unpack("<HH", data[6:10])


def _sun_size(data: bytes) -> tuple[int, int] | None:
    if data[:4] != b"\x59\xa6\x6a\x95":
        return None
    return struct.unpack(">II", data[4:12])


def _hdr_size(data: bytes) -> tuple[int, int] | None:
    """Radiance HDR: a '#?RADIANCE' (or '#?RGBE') header, a blank line, then '-Y height +X width' (or a
    rotation of it)."""
    if not data.startswith(b"#?"):
        return None
    end = data.find(b"\n\n", 0, 65536)
    if end < 0:
        return None
    tokens = data[end + 2:end + 2 + 64].split(b"\n", 1)[0].split()
    if len(tokens) != 4 or not tokens[1].isdigit() or not tokens[3].isdigit():
        return None
    first, second = int(tokens[1]), int(tokens[3])
    return (second, first) if tokens[0][1:2] == b"Y" else (first, second)


def _jp2_size(data: bytes) -> tuple[int, int] | None:
    """JPEG 2000: the 'ihdr' box of a JP2 file, or the SIZ marker of a bare codestream."""
    if data.startswith(b"\xff\x4f\xff\x51"):
        width, height, left, top = struct.unpack(">IIII", data[8:24])
        return width - left, height - top
    if data[4:12] != b"jP  \r\n\x87\n":
        return None
    at = data.find(b"ihdr", 0, 65536)
    if at < 0:
        return None
    height, width = struct.unpack(">II", data[at + 4:at + 12])
    return width, height


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
