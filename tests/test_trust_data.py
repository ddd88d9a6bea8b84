"""Data a user cannot see going wrong: the same file twice (links, repeated rows), a dataset that is not a
classification problem, an image that declares more pixels than memory holds, a FIFO among the images, sizes and
folds that cannot be, a decoded cache on a full disk or damaged since, and the image size and channels chosen
from the images themselves (image_size=auto, channels=auto)."""
from __future__ import annotations

import errno
import json
import logging
import os
import struct
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import assert_user_error, run_cli, write_png
from imgcls_cli.data import decode, stores
from imgcls_cli.data.datasets import load_dataset
from imgcls_cli.data.decode import DecodeError, decode_image
from imgcls_cli.data.stores import decoded_cache
from imgcls_cli.errors import UserError

BASE = {"max_train_samples": None, "max_eval_samples": None}


def folder_cfg(root: Path, **extra) -> dict:
    return {**BASE, "name": "imagefolder", "root": str(root), "image_size": 8, "channels": 1, "val_fraction": 0.0,
            "test_fraction": 0.0, **extra}


def csv_cfg(file: Path, **extra) -> dict:
    return {**BASE, "name": "csv", "file": str(file), "image_size": 8, "channels": 1, "val_fraction": 0.0,
            "test_fraction": 0.0, **extra}


def gray(value: int, size: int = 8) -> np.ndarray:
    return np.full((1, size, size), value, np.uint8)


def class_folders(root: Path, per_class: dict[str, int], size: int = 8) -> dict[str, list[Path]]:
    """root/<class>/<i>.png, every image a different gray level (so no two files are the same image)."""
    made, level = {}, 0
    for name, count in per_class.items():
        made[name] = []
        for i in range(count):
            made[name].append(write_png(root / name / f"{i}.png", gray(level % 256, size)))
            level += 1
    return made


def labelled(bundle) -> dict[str, tuple[str, str]]:
    """{id: (class, split)} of every image the bundle uses."""
    out = {}
    for split, part in bundle.splits.items():
        for sample_id, label in zip(part.ids, part.labels.tolist()):
            assert sample_id not in out, f"{sample_id} is in {out[sample_id][1]} and in {split}"
            out[sample_id] = (bundle.classes[label], split)
    return out


def tiff_header(width: int, height: int, *, big_endian: bool = False, bigtiff: bool = False) -> bytes:
    """A TIFF (or BigTIFF) whose one directory declares width x height 8-bit gray pixels in one deflated strip,
    followed by only a few bytes of that strip: a small file that declares a huge image."""
    order = ">" if big_endian else "<"
    payload = zlib.compress(bytes(4096))
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8), (262, 3, 1), (273, 4, 0),
               (277, 3, 1), (278, 4, height), (279, 4, len(payload))]
    if bigtiff:
        head = (b"MM" if big_endian else b"II") + struct.pack(order + "HHHQ", 43, 8, 0, 16)
        ifd_size = 8 + 20 * len(entries) + 8
        data_at = len(head) + ifd_size
        ifd = struct.pack(order + "Q", len(entries))
        for tag, kind, value in entries:
            value = data_at if tag == 273 else value
            packed = struct.pack(order + ("H" if kind == 3 else "I"), value).ljust(8, b"\0")
            ifd += struct.pack(order + "HHQ", tag, kind, 1) + packed
        return head + ifd + struct.pack(order + "Q", 0) + payload
    head = (b"MM" if big_endian else b"II") + struct.pack(order + "HI", 42, 8)
    data_at = len(head) + 2 + 12 * len(entries) + 4
    ifd = struct.pack(order + "H", len(entries))
    for tag, kind, value in entries:
        value = data_at if tag == 273 else value
        packed = struct.pack(order + ("H" if kind == 3 else "I"), value).ljust(4, b"\0")
        ifd += struct.pack(order + "HHI", tag, kind, 1) + packed
    return head + ifd + struct.pack(order + "I", 0) + payload


# ------------------------------------------------------------------------------ 5: each real file counted once
def test_symlink_loop_in_an_image_folder_keeps_each_file_once_in_its_own_class(tmp_path, caplog):
    root = tmp_path / "pets"
    class_folders(root, {"cat": 6, "dog": 6})
    (root / "cat" / "loop").symlink_to("..")  # cat/loop/dog/0.png is dog/0.png
    (root / "cat" / "x.png").symlink_to("../dog/0.png")  # a file link into another class
    with caplog.at_level(logging.WARNING, logger="imgcls"):
        bundle = load_dataset(folder_cfg(root, val_fraction=0.2, test_fraction=0.2), seed=0)
    seen = labelled(bundle)
    assert len(seen) == 12  # 12 real files, each once
    for sample_id, (name, _) in seen.items():
        assert name == Path(os.path.realpath(root / sample_id)).parent.name, sample_id
    warning = "\n".join(r.getMessage() for r in caplog.records)
    assert "7 duplicate(s) dropped: 12 distinct image files are listed 19 times" in warning
    assert "have copies with another label or split" in warning
    assert "each keeps the class and split of the folder it is really in" in warning


def test_split_folders_linking_the_same_file_keep_it_in_its_own_split(tmp_path):
    root = tmp_path / "data"
    class_folders(root / "train", {"a": 4, "b": 4})
    class_folders(root / "test", {"a": 2, "b": 2})
    os.remove(root / "test" / "a" / "0.png")
    (root / "test" / "a" / "0.png").symlink_to("../../train/a/0.png")  # a test image that is a train image
    bundle = load_dataset(folder_cfg(root), seed=0)
    seen = labelled(bundle)
    assert seen["train/a/0.png"] == ("a", "train") and "test/a/0.png" not in seen
    assert len(bundle.splits["test"]) == 3


def test_duplicate_csv_rows_are_dropped_so_no_test_row_is_also_a_train_row(tmp_path, caplog):
    images = class_folders(tmp_path, {"a": 12, "b": 12})
    rows = ["path,label,split"]
    rows += [f"{p.relative_to(tmp_path)},{p.parent.name},train" for name in images for p in images[name]]
    # 18 test rows, 17 of which repeat a train row; one of those also by another way to the same file.
    test = [p for name in images for p in images[name][:9]]
    rows += [f"{p.relative_to(tmp_path)},{p.parent.name},test" for p in test[:17]]
    rows[-1] = f"./{test[16].parent.name}/../{test[16].relative_to(tmp_path)},{test[16].parent.name},test"
    extra = write_png(tmp_path / "b" / "extra.png", gray(250))
    rows.append(f"{extra.relative_to(tmp_path)},b,test")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="imgcls"):
        bundle = load_dataset(csv_cfg(tmp_path / "labels.csv"), seed=0)
    seen = labelled(bundle)  # fails if an id is in two splits
    assert [i for i, (_, split) in seen.items() if split == "test"] == ["b/extra.png"]
    assert len(bundle.splits["train"]) == 24
    warning = "\n".join(r.getMessage() for r in caplog.records)
    assert "17 duplicate(s) dropped: 25 distinct image files are listed 42 times" in warning
    assert "17 of these file(s) have copies with another label or split" in warning
    assert "each keeps its first row's" in warning


def test_a_hard_link_is_the_same_file_too(tmp_path):
    class_folders(tmp_path / "data", {"a": 4, "b": 4})
    os.link(tmp_path / "data" / "a" / "0.png", tmp_path / "data" / "b" / "copy.png")
    bundle = load_dataset(folder_cfg(tmp_path / "data"), seed=0)
    assert len(bundle.splits["train"]) == 8 and "b/copy.png" not in labelled(bundle)


def test_a_file_given_two_labels_keeps_its_first_rows_and_says_so(tmp_path, caplog):
    images = class_folders(tmp_path, {"a": 4, "b": 4})
    rows = ["path,label"] + [f"{p.relative_to(tmp_path)},{p.parent.name}" for n in images for p in images[n]]
    rows += ["a/0.png,b", "b/1.png,b"]  # a conflicting label and a plain repeat
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="imgcls"):
        bundle = load_dataset(csv_cfg(tmp_path / "labels.csv"), seed=0)
    assert labelled(bundle)["a/0.png"][0] == "a"
    assert len(bundle.splits["train"]) == 8
    warning = "\n".join(r.getMessage() for r in caplog.records)
    assert "2 duplicate(s) dropped: 8 distinct image files are listed 10 times" in warning
    assert f"1 of these file(s) have copies with another label or split (e.g. {tmp_path / 'a/0.png'} as 'a'" in warning


# ------------------------------------------------------------------- 7: what cannot be a classification problem
def test_a_one_class_dataset_is_refused(tmp_path):
    class_folders(tmp_path / "only", {"cat": 10})
    with pytest.raises(UserError, match=r"dataset 'imagefolder' has one class \('cat'\): a classifier needs at "
                                        r"least 2 classes"):
        load_dataset(folder_cfg(tmp_path / "only"), seed=0)


def test_a_training_split_of_one_class_is_refused(tmp_path):
    images = class_folders(tmp_path, {"a": 4, "b": 4})
    split = {"a": "train", "b": "test"}
    rows = ["path,label,split"] + [f"{p.relative_to(tmp_path)},{p.parent.name},{split[p.parent.name]}"
                                   for n in images for p in images[n]]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(UserError, match=r"training split of dataset 'csv' holds images of one class only \('a'\)"):
        load_dataset(csv_cfg(tmp_path / "labels.csv"), seed=0)


def test_classes_too_small_for_the_validation_fraction_name_the_real_cause(tmp_path):
    class_folders(tmp_path / "many", {f"c{i:03d}": 4 for i in range(100)})
    with pytest.raises(UserError) as caught:
        load_dataset(folder_cfg(tmp_path / "many", val_fraction=0.1, test_fraction=0.1), seed=0)
    assert str(caught.value) == (
        "dataset.val_fraction=0.1 leaves no validation image: 100 classes with 4 image(s) each are too few (0.1 of "
        "4 rounds to 0 per class); raise dataset.val_fraction to 0.25 or more, add images, or set "
        "dataset.val_fraction=0 to go without a validation split.")
    with pytest.raises(UserError, match="dataset.test_fraction=0.1 leaves no test image"):
        load_dataset(folder_cfg(tmp_path / "many", val_fraction=0.0, test_fraction=0.1), seed=0)


def test_a_fraction_carved_from_a_train_folder_names_the_real_cause_too(tmp_path):
    class_folders(tmp_path / "data" / "train", {"a": 3, "b": 3})
    with pytest.raises(UserError, match=r"dataset.val_fraction=0.1 leaves no validation image: 2 classes with 3 "
                                        r"image\(s\) each are too few"):
        load_dataset(folder_cfg(tmp_path / "data", val_fraction=0.1), seed=0)


def test_fraction_zero_still_means_no_split(tmp_path):
    class_folders(tmp_path / "few", {"a": 4, "b": 4})
    bundle = load_dataset(folder_cfg(tmp_path / "few", val_fraction=0.0, test_fraction=0.0), seed=0)
    assert (len(bundle.splits["train"]), len(bundle.splits["val"]), len(bundle.splits["test"])) == (8, 0, 0)


# ------------------------------------------------------------------ 11: pixel count from the header, every format
@pytest.mark.parametrize("big_endian", [False, True], ids=["little-endian", "big-endian"])
@pytest.mark.parametrize("bigtiff", [False, True], ids=["tiff", "bigtiff"])
def test_tiff_declaring_30000x30000_pixels_is_refused_before_decoding(tmp_path, monkeypatch, big_endian, bigtiff):
    path = tmp_path / "bomb.tif"
    path.write_bytes(tiff_header(30000, 30000, big_endian=big_endian, bigtiff=bigtiff))
    assert path.stat().st_size < 10_000
    monkeypatch.setattr(decode.cv2, "imdecode", pytest.fail)
    with pytest.raises(DecodeError, match="image is 30000x30000 = 900000000 pixels, more than the limit 89478485"):
        decode_image(path, channels=3, size=32)


@pytest.mark.parametrize("header", [
    b"P5\n# a comment\n30000 30000\n255\n", b"GIF89a" + struct.pack("<HH", 30000, 30000) + b"\x00" * 3,
    b"\x59\xa6\x6a\x95" + struct.pack(">IIII", 30000, 30000, 8, 0),
    b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 30000 +X 30000\n",
], ids=["pgm", "gif", "sun-raster", "radiance-hdr"])
def test_other_formats_declaring_30000x30000_pixels_are_refused_before_decoding(tmp_path, monkeypatch, header):
    path = tmp_path / "bomb.png"  # the name does not matter: the content's header does
    path.write_bytes(header + bytes(1000))
    monkeypatch.setattr(decode.cv2, "imdecode", pytest.fail)
    with pytest.raises(DecodeError, match="image is 30000x30000 = 900000000 pixels, more than the limit 89478485"):
        decode_image(path, channels=1, size=32)


def test_opencv_holds_a_header_not_read_here_to_the_same_limit(tmp_path):
    """OpenCV's own header check, set up when decode.py loads it: a fresh process, as the CLI is."""
    import subprocess
    import sys

    path = tmp_path / "bomb.pgm"
    path.write_bytes(b"P5\n30000 30000\n255\n" + bytes(1000))
    code = ("import sys; from imgcls_cli.data import decode\n"
            "decode._header_size = lambda data: None  # as for a format this module does not read\n"
            "try:\n    decode.decode_image(sys.argv[1], 1, 32)\nexcept decode.DecodeError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "image declares more pixels than the limit 89478485", out.stderr


def test_an_oversized_image_in_an_image_folder_is_skipped_with_its_reason(tmp_path):
    class_folders(tmp_path / "data", {"a": 4, "b": 4})
    (tmp_path / "data" / "a" / "bomb.tif").write_bytes(tiff_header(30000, 30000))
    bundle = load_dataset(folder_cfg(tmp_path / "data"), seed=0)
    assert len(bundle.splits["train"]) == 8
    assert bundle.skipped == [(str(tmp_path / "data" / "a" / "bomb.tif"),
                               "image is 30000x30000 = 900000000 pixels, more than the limit 89478485")]


def test_tiffs_within_the_limit_still_decode(tmp_path):
    path = tmp_path / "ok.tif"
    cv2.imwrite(str(path), np.arange(20 * 30, dtype=np.uint8).reshape(20, 30))
    assert decode.header_size(path) == (30, 20)
    assert decode_image(path, channels=1, size=None).shape == (1, 20, 30)


# ------------------------------------------------------------------------------- 12: FIFOs are not image files
def load_within(cfg: dict, seconds: float = 60):
    """load_dataset on a thread: a read that blocks fails the test instead of hanging it."""
    result: dict = {}

    def run() -> None:
        try:
            result["bundle"] = load_dataset(cfg, seed=0)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "load_dataset blocked on the FIFO"
    if "error" in result:
        raise result["error"]
    return result["bundle"]


@pytest.mark.parametrize("in_memory", [True, False], ids=["in-memory", "streamed"])
def test_a_fifo_named_in_a_csv_is_skipped_not_waited_for(tmp_path, in_memory):
    images = class_folders(tmp_path, {"a": 4, "b": 4})
    os.mkfifo(tmp_path / "a" / "pipe.png")
    rows = ["path,label"] + [f"{p.relative_to(tmp_path)},{p.parent.name}" for n in images for p in images[n]]
    rows.append("a/pipe.png,a")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    bundle = load_within(csv_cfg(tmp_path / "labels.csv", in_memory=in_memory))
    if in_memory:
        assert bundle.skipped == [(str(tmp_path / "a" / "pipe.png"), "is a FIFO (named pipe), not a regular file")]
        assert len(bundle.splits["train"]) == 8
    else:  # streamed: found unreadable when its batch is read, and listed with its reason
        import torch

        from imgcls_cli.data.loader import make_loader

        train = bundle.splits["train"]
        loader = make_loader(train.images, train.labels, 4, bundle.mean, bundle.std, device=torch.device("cpu"))
        assert sum(len(y) for _, y in loader) == 8
        assert loader.skipped == {str(tmp_path / "a" / "pipe.png"): "is a FIFO (named pipe), not a regular file"}


def test_decode_refuses_non_regular_files_before_opening_them(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(DecodeError, match="is a FIFO"):
        decode_image(tmp_path / "pipe.png", channels=3, size=8)
    with pytest.raises(DecodeError, match="is a character device, not a regular file"):
        decode_image("/dev/zero", channels=3, size=8)


# ---------------------------------------------------------------------- 13: sizes and folds that cannot be
@pytest.mark.parametrize("value", [100000, 4, 0, "big"])
def test_image_size_out_of_range_is_one_line(value):
    with pytest.raises(UserError, match=r"dataset.image_size must be a whole number from 8 to 2048 \(pixels a "
                                        r"side\), or auto, not"):
        load_dataset({**BASE, "name": "digits", "image_size": value, "channels": 1, "val_fraction": 0.1,
                      "test_fraction": 0.1}, seed=0)


def test_folds_beyond_the_smallest_class_are_one_line_with_the_cause():
    cfg = {**BASE, "name": "digits", "image_size": 8, "channels": 1, "val_fraction": 0.1, "test_fraction": 0.1}
    with pytest.raises(UserError) as caught:
        load_dataset({**cfg, "folds": 100000}, seed=0)
    assert str(caught.value).startswith("dataset.folds=100000 is more than the ")
    assert "image(s) of class '" in str(caught.value) and "use dataset.folds between 2 and " in str(caught.value)
    assert len(load_dataset({**cfg, "folds": 5}, seed=0).splits["val"]) > 0


def test_in_memory_true_beyond_the_machines_memory_is_one_line(tmp_path, monkeypatch):
    from imgcls_cli.data import datasets

    class_folders(tmp_path / "data", {"a": 2, "b": 2})
    monkeypatch.setattr(datasets, "_physical_memory", lambda: 20_000_000)  # a machine with 20 MB
    with pytest.raises(UserError) as caught:
        load_dataset(folder_cfg(tmp_path / "data", image_size=2048, channels=3, in_memory=True), seed=0)
    assert str(caught.value) == (
        "dataset.in_memory=true needs 0.1 GB for 4 images of 3x2048x2048, more than this machine's 0.0 GB of "
        "memory; use dataset.in_memory=auto (images read a batch at a time) or a smaller dataset.image_size.")
    streamed = load_dataset(folder_cfg(tmp_path / "data", image_size=64, channels=3, in_memory="auto"), seed=0)
    assert len(streamed.splits["train"]) == 4


def test_cli_image_size_100000_is_one_line_before_any_allocation(tmp_path):
    result = run_cli("train", "dataset=digits", "dataset.image_size=100000", "epochs=1", cwd=tmp_path)
    assert_user_error(result, "dataset.image_size must be a whole number from 8 to 2048")


# ------------------------------------------------------------------------ 10: the decoded cache, whole or not at all
@pytest.fixture()
def tree_paths(tmp_path) -> list[Path]:
    made = class_folders(tmp_path / "tree", {"a": 6, "b": 6}, size=12)
    return [p for paths in made.values() for p in paths]


def test_a_full_disk_at_cache_creation_is_one_line_and_leaves_no_partial_file(tmp_path, tree_paths, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(stores.os, "posix_fallocate", full)
    with pytest.raises(UserError) as caught:
        decoded_cache(tree_paths, 1, 8, tmp_path / "cache")
    message = str(caught.value)
    assert "cannot write the decoded cache" in message and "No space left on device" in message
    assert "dataset.cache_dir=FOLDER" in message and "\n" not in message
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_full_disk_through_load_dataset_is_the_same_one_line(tmp_path, monkeypatch):
    class_folders(tmp_path / "data", {"a": 4, "b": 4})

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(stores.os, "posix_fallocate", full)
    with pytest.raises(UserError, match="cannot write the decoded cache .*No space left on device"):
        load_dataset(folder_cfg(tmp_path / "data", cache=True, cache_dir=str(tmp_path / "cache")), seed=0)
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_truncated_cache_is_rebuilt_not_used(tmp_path, tree_paths, caplog):
    expected, _, built = decoded_cache(tree_paths, 1, 8, tmp_path / "cache")
    expected = np.array(expected)
    assert built
    (data,) = (tmp_path / "cache").glob("*.npy")
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size - 64)
    with caplog.at_level(logging.WARNING, logger="imgcls"):
        again, _, rebuilt = decoded_cache(tree_paths, 1, 8, tmp_path / "cache")
    assert rebuilt and np.array_equal(np.array(again), expected)
    assert "is not usable (it is" in caplog.text and "rebuilding it" in caplog.text


def test_a_cache_overwritten_in_place_is_rebuilt(tmp_path, tree_paths, caplog):
    expected = np.array(decoded_cache(tree_paths, 1, 8, tmp_path / "cache")[0])
    (data,) = (tmp_path / "cache").glob("*.npy")
    raw = bytearray(data.read_bytes())
    raw[-32:] = bytes(32)  # the last image's pixels zeroed, the size unchanged
    data.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="imgcls"):
        again, _, rebuilt = decoded_cache(tree_paths, 1, 8, tmp_path / "cache")
    assert rebuilt and np.array_equal(np.array(again), expected)
    assert "its content changed since it was written" in caplog.text


def test_a_cache_without_its_completion_marker_is_rebuilt(tmp_path, tree_paths, caplog):
    expected = np.array(decoded_cache(tree_paths, 1, 8, tmp_path / "cache")[0])
    (marker,) = (tmp_path / "cache").glob("*.json")
    (data,) = (tmp_path / "cache").glob("*.npy")
    marker.unlink()
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # what a killed build could have left
    with caplog.at_level(logging.WARNING, logger="imgcls"):
        again, _, rebuilt = decoded_cache(tree_paths, 1, 8, tmp_path / "cache")
    assert rebuilt and np.array_equal(np.array(again), expected)
    assert "it has no completion marker" in caplog.text
    assert json.loads(marker.read_text())["bytes"] == data.stat().st_size


def test_partial_files_of_a_killed_build_are_removed(tmp_path, tree_paths):
    decoded_cache(tree_paths, 1, 8, tmp_path / "cache")
    (data,) = (tmp_path / "cache").glob("*.npy")
    dead = 2**22 + 12345  # above any pid_max default: no such process
    stale = data.with_name(f"{data.name}.partial-{dead}")
    stale.write_bytes(b"half")
    data.unlink()
    decoded_cache(tree_paths, 1, 8, tmp_path / "cache")
    assert not stale.exists()


# --------------------------------------------------------------- 17: image_size and channels from the images
def auto_cfg(root: Path, **extra) -> dict:
    return folder_cfg(root, image_size="auto", channels="auto", **extra)


def test_auto_picks_the_median_size_and_one_channel_for_gray_images(tmp_path, caplog):
    for i in range(10):
        write_png(tmp_path / "d" / "even" / f"{i}.png", gray(2 * i, 28))
        write_png(tmp_path / "d" / "odd" / f"{i}.png", gray(2 * i + 1, 28))
    with caplog.at_level(logging.INFO, logger="imgcls"):
        bundle = load_dataset(auto_cfg(tmp_path / "d"), seed=0)
    assert (bundle.image_size, bundle.channels) == (32, 1)
    assert tuple(bundle.splits["train"].images.shape[1:]) == (1, 32, 32)
    assert "image_size auto: 32 (median of 20 images), channels auto: 1 (every image is gray)" in caplog.text


def test_auto_takes_three_channels_when_an_image_is_in_colour(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for i in range(6):
        write_png(tmp_path / "d" / "a" / f"{i}.png", gray(i, 40))
        write_png(tmp_path / "d" / "b" / f"{i}.png", rng.integers(0, 256, (3, 40, 40), dtype=np.uint8))
    with caplog.at_level(logging.INFO, logger="imgcls"):
        bundle = load_dataset(auto_cfg(tmp_path / "d"), seed=0)
    assert (bundle.image_size, bundle.channels) == (40, 3)
    assert "channels auto: 3 (colour images, e.g. " in caplog.text


def test_auto_decodes_colour_jpegs_to_find_gray_pixels(tmp_path):
    for name in ("a", "b"):
        for i in range(4):
            pixels = np.full((20, 20, 3), 40 * i + (name == "b") * 10, np.uint8)  # 3-channel JPEG, gray content
            (tmp_path / "d" / name).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(tmp_path / "d" / name / f"{i}.jpg"), pixels)
    assert decode.image_header(tmp_path / "d" / "a" / "0.jpg")[2] is None  # the header does not tell
    bundle = load_dataset(auto_cfg(tmp_path / "d"), seed=0)
    assert (bundle.image_size, bundle.channels) == (24, 1)


def test_auto_size_is_capped_and_explicit_values_pass_through(tmp_path, caplog):
    for name in ("a", "b"):
        for i in range(3):
            write_png(tmp_path / "d" / name / f"{i}.png", gray(i + (name == "b") * 100, 300))
    with caplog.at_level(logging.INFO, logger="imgcls"):
        bundle = load_dataset(auto_cfg(tmp_path / "d"), seed=0)
    assert bundle.image_size == 224
    assert "image_size auto: 224 (median of 6 images; median 300, capped at 224)" in caplog.text
    explicit = load_dataset(folder_cfg(tmp_path / "d", image_size=16, channels=3), seed=0)
    assert (explicit.image_size, explicit.channels) == (16, 3)


def test_auto_for_a_dataset_of_arrays_is_its_own_size():
    cfg = {**BASE, "name": "digits", "image_size": "auto", "channels": "auto", "val_fraction": 0.1,
           "test_fraction": 0.1}
    bundle = load_dataset(cfg, seed=0)
    assert (bundle.image_size, bundle.channels) == (8, 1)


def test_a_checkpoints_own_ints_replace_auto_when_it_is_evaluated():
    from imgcls_cli.engine.inference import dataset_for_checkpoint

    ckpt = {"config": {"dataset": {"name": "imagefolder", "root": "x", "image_size": "auto", "channels": "auto"}},
            "input": {"channels": 1, "size": 32}}
    cfg = dataset_for_checkpoint(ckpt, None)
    assert (cfg["image_size"], cfg["channels"]) == (32, 1)


def test_cli_imagefolder_of_28px_gray_images_trains_at_1x32x32_by_default(tmp_path):
    for i in range(12):
        write_png(tmp_path / "d" / "dark" / f"{i}.png", gray(10 + i, 28))
        write_png(tmp_path / "d" / "light" / f"{i}.png", gray(200 + i, 28))
    result = run_cli("train", "dataset=imagefolder", f"dataset.root={tmp_path / 'd'}", "epochs=1", "batch_size=8",
                     "model.widths=[4,8,8]", "model.hidden=8", cwd=tmp_path)
    assert result.returncode == 0, result.describe()
    import torch

    best = torch.load(result.run_dir / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    assert (best["input"]["channels"], best["input"]["size"]) == (1, 32)
    log = (result.run_dir / "train.log").read_text()
    assert "image_size auto: 32 (median of 24 images), channels auto: 1 (every image is gray)" in log
