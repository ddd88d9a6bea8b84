"""Decoding real image files of every supported format, and listing image folders."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from imgcls_cli.data import decode
from imgcls_cli.data.decode import DecodeError, decode_image, list_images

RED_BGR, GREEN_BGR, BLUE_BGR = (0, 0, 255), (0, 255, 0), (255, 0, 0)


def colour_blocks() -> np.ndarray:
    """A 32x48 BGR image: red top, green middle, blue bottom (flat areas survive lossy codecs)."""
    image = np.zeros((32, 48, 3), np.uint8)
    image[:10], image[10:22], image[22:] = RED_BGR, GREEN_BGR, BLUE_BGR
    return image


def write(path: Path, image: np.ndarray, params: tuple[int, ...] = ()) -> Path:
    ok, encoded = cv2.imencode(path.suffix, image, list(params))
    assert ok
    encoded.tofile(path)
    return path


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def raw_png(width: int, height: int, colour_type: int, rows: bytes, palette: bytes = b"") -> bytes:
    """A minimal 8-bit PNG written by hand (OpenCV cannot write palette PNGs)."""
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    chunks = png_chunk(b"IHDR", header)
    if palette:
        chunks += png_chunk(b"PLTE", palette)
    return b"\x89PNG\r\n\x1a\n" + chunks + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b"")


def assert_rgb_blocks(image: np.ndarray, tolerance: int = 0) -> None:
    assert image.shape == (3, 32, 48) and image.dtype == np.uint8
    for row, bgr in ((5, RED_BGR), (16, GREEN_BGR), (27, BLUE_BGR)):
        np.testing.assert_allclose(image[:, row, 24], bgr[::-1], atol=tolerance)


def test_grayscale_png_keeps_values_and_has_one_channel(tmp_path: Path) -> None:
    gray = np.arange(32 * 48, dtype=np.uint32).reshape(32, 48).astype(np.uint8)
    image = decode_image(write(tmp_path / "gray.png", gray), channels=1, size=None)
    assert image.shape == (1, 32, 48) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[0], gray)


@pytest.mark.parametrize(
    ("suffix", "params", "tolerance"),
    [
        (".png", (), 0),
        (".bmp", (), 0),
        (".tif", (), 0),
        (".tiff", (), 0),
        (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101), 0),
        (".webp", (cv2.IMWRITE_WEBP_QUALITY, 90), 8),
        (".jpg", (cv2.IMWRITE_JPEG_QUALITY, 95), 8),
        (".jpeg", (cv2.IMWRITE_JPEG_QUALITY, 95), 8),
    ],
)
def test_colour_formats_decode_to_rgb(tmp_path: Path, suffix: str, params: tuple[int, ...], tolerance: int) -> None:
    path = write(tmp_path / f"blocks{suffix}", colour_blocks(), params)
    assert_rgb_blocks(decode_image(path, channels=3, size=None), tolerance)


def test_rgba_png_drops_alpha_and_keeps_colours(tmp_path: Path) -> None:
    bgra = np.dstack([colour_blocks(), np.full((32, 48), 40, np.uint8)])
    assert_rgb_blocks(decode_image(write(tmp_path / "alpha.png", bgra), channels=3, size=None))


def test_16_bit_png_is_scaled_to_8_bit_with_rounding(tmp_path: Path) -> None:
    values = np.array([[0, 128, 129, 257 * 100, 65535]], np.uint16)
    image = decode_image(write(tmp_path / "deep.png", values), channels=1, size=None)
    np.testing.assert_array_equal(image[0, 0], [0, 0, 1, 100, 255])


def test_16_bit_colour_png(tmp_path: Path) -> None:
    deep = colour_blocks().astype(np.uint16) * 257
    assert_rgb_blocks(decode_image(write(tmp_path / "deep.png", deep), channels=3, size=None))


@pytest.mark.parametrize(
    ("values", "expected"),
    [([0.0, 0.5, 1.0, -0.2], [0, 128, 255, 0]), ([0.0, 100.4, 255.0, 300.0], [0, 100, 255, 255])],
)
def test_float_tiff_is_scaled_or_clipped(tmp_path: Path, values: list[float], expected: list[int]) -> None:
    path = write(tmp_path / "float.tif", np.array([values], np.float32))
    np.testing.assert_array_equal(decode_image(path, channels=1, size=None)[0, 0], expected)


def test_palette_png_decodes_to_rgb(tmp_path: Path) -> None:
    palette = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255])
    rows = b"".join(b"\x00" + bytes([0, 1, 2, 1]) for _ in range(2))
    path = tmp_path / "palette.png"
    path.write_bytes(raw_png(4, 2, colour_type=3, rows=rows, palette=palette))
    image = decode_image(path, channels=3, size=None)
    np.testing.assert_array_equal(image[:, 0, :].T, [[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 255, 0]])


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    jpeg = cv2.imencode(".jpg", colour_blocks())[1].tobytes()
    rotate_90 = struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
    exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08" + struct.pack(">H", 1) + rotate_90 + b"\x00" * 4
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    (tmp_path / "phone.jpg").write_bytes(jpeg[:2] + app1 + jpeg[2:])
    image = decode_image(tmp_path / "phone.jpg", channels=3, size=None)
    # Turned clockwise: the red top band becomes the right-hand side.
    assert image.shape == (3, 48, 32)
    np.testing.assert_allclose(image[:, 24, 28], RED_BGR[::-1], atol=8)
    np.testing.assert_allclose(image[:, 24, 2], BLUE_BGR[::-1], atol=8)


def test_channel_conversion(tmp_path: Path) -> None:
    gray = np.full((8, 8), 77, np.uint8)
    as_rgb = decode_image(write(tmp_path / "gray.png", gray), channels=3, size=None)
    assert as_rgb.shape == (3, 8, 8) and (as_rgb == 77).all()
    as_gray = decode_image(write(tmp_path / "blocks.png", colour_blocks()), channels=1, size=None)
    assert as_gray.shape == (1, 32, 48)
    expected = cv2.cvtColor(colour_blocks(), cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(as_gray[0], expected)


def test_non_ascii_file_name(tmp_path: Path) -> None:
    folder = tmp_path / "données"
    folder.mkdir()
    path = write(folder / "ü ñ 画像.png", colour_blocks())
    assert_rgb_blocks(decode_image(path, channels=3, size=None))
    assert list_images(tmp_path) == [path]


@pytest.mark.parametrize(
    ("size", "shape"),
    [(16, (3, 16, 16)), (64, (3, 64, 64)), ((16, 24), (3, 16, 24)), ((64, 24), (3, 64, 24)), ((32, 48), (3, 32, 48))],
)
def test_resize_shapes(tmp_path: Path, size: int | tuple[int, int], shape: tuple[int, ...]) -> None:
    image = decode_image(write(tmp_path / "blocks.png", colour_blocks()), channels=3, size=size)
    assert image.shape == shape and image.dtype == np.uint8 and image.flags.c_contiguous


def test_shrinking_averages_and_enlarging_interpolates(tmp_path: Path) -> None:
    stripes = np.zeros((64, 64), np.uint8)
    stripes[:, 1::2] = 200
    small = decode_image(write(tmp_path / "stripes.png", stripes), channels=1, size=16)
    # Area averaging turns 1-px stripes into flat grey; nearest-neighbour or bilinear sampling would alias.
    assert (small == 100).all()
    step = np.array([[0, 200]], np.uint8)
    large = decode_image(write(tmp_path / "step.png", step), channels=1, size=(1, 8))
    assert large[0, 0, 0] == 0 and large[0, 0, -1] == 200
    assert 0 < large[0, 0, 4] < 200 and np.all(np.diff(large[0, 0].astype(int)) >= 0)


def test_mixed_resize_averages_the_shrinking_axis(tmp_path: Path) -> None:
    row = np.random.default_rng(0).integers(0, 256, 64).astype(np.uint8)
    image = decode_image(write(tmp_path / "wide.png", np.tile(row, (4, 1))), channels=1, size=(8, 16))
    # A single bilinear or area resize samples (rather than averages) the width when the height grows.
    assert image.shape == (1, 8, 16)
    np.testing.assert_allclose(image[0], np.tile(row.reshape(16, 4).mean(axis=1), (8, 1)), atol=0.5)


@pytest.mark.parametrize("size", [0, (0, 4), (4, -1)])
def test_bad_size_is_refused(tmp_path: Path, size: int | tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="size"):
        decode_image(write(tmp_path / "a.png", colour_blocks()), channels=3, size=size)


def test_bad_channels_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="channels"):
        decode_image(write(tmp_path / "a.png", colour_blocks()), channels=4, size=None)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.png").touch()
    with pytest.raises(DecodeError, match="empty file"):
        decode_image(tmp_path / "empty.png", channels=3, size=None)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match="file not found"):
        decode_image(tmp_path / "missing.png", channels=3, size=None)


def test_truncated_png(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = cv2.imencode(".png", noise)[1].tobytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match="not a decodable image"):
        decode_image(tmp_path / "cut.png", channels=3, size=None)


def test_truncated_jpeg_is_refused_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", noise)[1].tobytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 9 // 10])
    monkeypatch.setattr(decode.cv2, "imdecode", pytest.fail)
    with pytest.raises(DecodeError, match="truncated"):
        decode_image(tmp_path / "cut.jpg", channels=3, size=None)


def test_text_file_named_png(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("these are not pixels\n")
    with pytest.raises(DecodeError, match="not a decodable image"):
        decode_image(tmp_path / "notes.png", channels=3, size=None)


def test_png_header_over_the_pixel_limit_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(raw_png(10_000, 10_000, colour_type=0, rows=b"\x00" * 16))
    monkeypatch.setattr(decode.cv2, "imdecode", pytest.fail)
    with pytest.raises(DecodeError, match="10000x10000 = 100000000 pixels, more than the limit 89478485"):
        decode_image(path, channels=3, size=None)


@pytest.mark.parametrize(
    ("suffix", "params", "alpha"),
    [
        (".jpg", (), False),
        (".bmp", (), False),
        (".webp", (cv2.IMWRITE_WEBP_QUALITY, 80), False),
        (".webp", (cv2.IMWRITE_WEBP_QUALITY, 80), True),
        (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101), False),
    ],
    ids=["jpeg", "bmp", "webp-lossy", "webp-extended", "webp-lossless"],
)
def test_headers_are_checked_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, params: tuple[int, ...], alpha: bool
) -> None:
    image = np.dstack([colour_blocks(), np.full((32, 48), 99, np.uint8)]) if alpha else colour_blocks()
    path = write(tmp_path / f"big{suffix}", image, params)
    monkeypatch.setattr(decode, "MAX_PIXELS", 32 * 48 - 1)
    monkeypatch.setattr(decode.cv2, "imdecode", pytest.fail)
    with pytest.raises(DecodeError, match="48x32 = 1536 pixels, more than the limit 1535"):
        decode_image(path, channels=3, size=None)


def test_pixel_limit_is_checked_after_decoding_without_a_known_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "big.tif", colour_blocks())
    monkeypatch.setattr(decode, "MAX_PIXELS", 100)
    with pytest.raises(DecodeError, match="more than the limit 100"):
        decode_image(path, channels=3, size=None)


def test_images_at_the_limit_decode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "MAX_PIXELS", 32 * 48)
    for suffix in (".png", ".jpg", ".tif"):
        assert decode_image(write(tmp_path / f"a{suffix}", colour_blocks()), channels=3, size=None).shape == (3, 32, 48)


def test_list_images_recurses_sorts_and_skips_hidden_and_other_files(tmp_path: Path) -> None:
    tiny = np.zeros((2, 2), np.uint8)
    wanted = ["b/z.PNG", "a/deep/er/x.JpEg", "a/y.webp", "c.tiff", "a/w.bmp", "d.TIF", "a/deep/v.jpg"]
    ignored = [".hidden.png", "a/.secret.jpg", ".git/objects/x.png", "a/.cache/y.png"]
    ignored += ["notes.txt", "a/labels.csv", "b/png", "e.gif"]
    for name in wanted + ignored:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(cv2.imencode(".png", tiny)[1].tobytes())
    found = list_images(tmp_path)
    assert found == sorted(tmp_path / name for name in wanted)
    assert found[0] == tmp_path / "a/deep/er/x.JpEg"


def test_list_images_of_a_hidden_root_still_lists_it(tmp_path: Path) -> None:
    root = tmp_path / ".data"
    (root / "cat").mkdir(parents=True)
    image = write(root / "cat" / "1.png", np.zeros((2, 2), np.uint8))
    assert list_images(root) == [image]


def test_list_images_of_a_single_file(tmp_path: Path) -> None:
    image = write(tmp_path / "one.PNG", np.zeros((2, 2), np.uint8))
    (tmp_path / "notes.txt").write_text("x")
    assert list_images(image) == [image]
    assert list_images(tmp_path / "notes.txt") == []


def test_list_images_follows_folder_links_but_not_loops(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    write(tmp_path / "real" / "a.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "real" / "loop").symlink_to(tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert list_images(tmp_path) == [tmp_path / "link" / "a.png", tmp_path / "real" / "a.png"]


def test_list_images_of_a_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "nowhere")
