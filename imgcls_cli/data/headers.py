"""The width and height an image file's header declares, read from its first bytes without decoding it: PNG,
JPEG, BMP, WebP, TIFF/BigTIFF, PNM/PFM, GIF, Sun raster, Radiance HDR and JPEG 2000 (and whether a PNG or JPEG
says it is gray). decode.py refuses an image that declares too many pixels before it decodes anything."""
from __future__ import annotations

import struct
from typing import Iterator

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
_JPEG_SOS, _JPEG_EOI = 0xDA, b"\xff\xd9"


def declared_gray(data: bytes) -> bool | None:
    if data.startswith(_PNG_SIGNATURE) and len(data) > 25:
        return {0: True, 4: True, 2: False, 6: False}.get(data[25])
    try:
        for marker, offset in _jpeg_segments(data):
            if marker in _JPEG_SOF_MARKERS:
                return True if data[offset + 9] == 1 else None
    except (struct.error, IndexError):
        return None
    return None


def declared_size(data: bytes) -> tuple[int, int] | None:
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


def jpeg_truncated(data: bytes) -> bool:
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
