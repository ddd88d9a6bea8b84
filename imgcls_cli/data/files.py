"""Datasets of image files: a class-folder tree (`imagefolder`) or a CSV of path,label (`csv`).

Files are decoded with OpenCV on a thread pool (OpenCV releases the GIL), straight to the dataset's channels and
size. A file that cannot be decoded is skipped and reported, or stops the run with dataset.on_bad_file=error.
A file reached more than once (folder or file links, hard links, repeated CSV rows) is used once, with a warning.
"""
from __future__ import annotations

import csv
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgcls_cli.cores import MOST_WORKERS, usable_cores
from imgcls_cli.data.decode import DecodeError, decode_image, image_header, image_shape, list_images
from imgcls_cli.errors import UserError
from imgcls_cli.specs.dataset import BAD_FILE_CHOICES

SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
# dataset.image_size/channels=auto: headers of at most AUTO_SAMPLE files (a seeded sample of larger datasets) are
# read; files whose header does not say whether they are gray are decoded, at most AUTO_DECODES of them.
AUTO_SAMPLE, AUTO_DECODES = 1000, 64
AUTO_MIN_SIZE, AUTO_MAX_SIZE, AUTO_FALLBACK = 8, 224, (64, 3)
log = logging.getLogger("imgcls")


@dataclass
class Decoded:
    images: np.ndarray  # uint8 (N, C, S, S) of the files that decoded
    keep: np.ndarray  # indices into the file list of those files
    skipped: list[tuple[str, str]]  # (path, reason) of the others


def decode_into(out: np.ndarray, paths: list[Path], workers: int | None = None) -> list[str | None]:
    """Decode paths[i] into out[i] (uint8 (N, C, S, S), an array or a memmap) on a thread pool; the reason per
    file that did not decode (its row is left as it was), None for the others."""
    channels, size = out.shape[1], out.shape[2]

    def one(i: int) -> str | None:
        try:
            out[i] = decode_image(paths[i], channels, size)
        except DecodeError as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(max_workers=workers or min(MOST_WORKERS, usable_cores())) as pool:
        return list(pool.map(one, range(len(paths)), chunksize=64))


def decode_files(paths: list[Path], channels: int, size: int, on_bad_file: str = "skip",
                 workers: int | None = None) -> Decoded:
    """Decode every file to uint8 (channels, size, size); bad files are skipped (or an error, naming them)."""
    if on_bad_file not in BAD_FILE_CHOICES:
        raise UserError(f"dataset.on_bad_file must be skip or error, not '{on_bad_file}'.")
    out = np.empty((len(paths), channels, size, size), np.uint8)
    errors = decode_into(out, paths, workers)
    skipped = [(str(p), e) for p, e in zip(paths, errors) if e is not None]
    if skipped and on_bad_file == "error":
        first = "; ".join(f"{p} ({e})" for p, e in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        raise UserError(f"{len(skipped)} file(s) could not be decoded: {first}{more}. "
                        "Remove them, or set dataset.on_bad_file=skip to train without them.")
    keep = np.array([i for i, e in enumerate(errors) if e is None], dtype=np.int64)
    return Decoded(out[keep] if len(skipped) else out, keep, skipped)


def class_tree(folder: Path) -> dict[str, list[Path]]:
    """{class name: its image files (recursive)} for the non-hidden sub-folders of folder, sorted by name."""
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    return {c: list_images(folder / c) for c in classes}


def find_split_folders(root: Path) -> dict[str, Path]:
    """{split: folder} for the split folders root has (train/, val/ or valid/ or validation/, test/)."""
    found = {}
    for split, names in SPLIT_FOLDERS.items():
        for name in names:
            if (root / name).is_dir():
                found[split] = root / name
                break
    return found


def scan_imagefolder(root: Path) -> tuple[list[Path], list[str], list[str], list[str] | None]:
    """(files, their class names, the classes, their split or None) of an image-folder root.

    With train/ (+ val/, + test/) each split is its own class tree and the classes are train/'s; otherwise
    root itself is one class tree, split later by the fractions.
    """
    if not root.is_dir():
        raise UserError(f"dataset.root={root} is not a folder; give a folder of class folders (or of "
                        "train/ val/ test/ class folders).")
    folders = find_split_folders(root)
    if folders and "train" not in folders:
        raise UserError(f"{root} has {', '.join(f.name + '/' for f in folders.values())} but no train/ folder.")
    trees = {s: class_tree(f) for s, f in folders.items()} if folders else {None: class_tree(root)}
    classes = list(next(iter(trees.values())))
    if not classes:
        raise UserError(f"{root} has no class folders: put each class's images in a folder named after it.")
    files, labels, splits = [], [], []
    for split, tree in trees.items():
        if split is not None and not any(tree.values()):
            raise UserError(f"{folders[split]} has no images; put images in its class folders or remove it.")
        if unknown := sorted(set(tree) - set(classes)):
            raise UserError(f"{folders[split]} has class folder(s) {', '.join(unknown)} that train/ lacks.")
        for name, paths in tree.items():
            files += paths
            labels += [name] * len(paths)
            splits += [split] * len(paths)
    if not files:
        raise UserError(f"no images under {root} (looked for {', '.join(sorted(_extensions()))}).")
    keep = unique_files(files, labels, str(root), _direct_first(files, root), splits if folders else None)
    files, labels, splits = [files[i] for i in keep], [labels[i] for i in keep], [splits[i] for i in keep]
    return files, labels, classes, splits if folders else None


def _direct_first(files: list[Path], root: Path) -> list[int]:
    """The order in which copies of one real file are preferred: first the paths that reach it without a link
    below root (the folder it really is in names its class), then the others in listing order."""
    real_root = os.path.realpath(root)

    def linked(path: Path) -> bool:
        return os.path.realpath(path) != os.path.normpath(os.path.join(real_root, os.path.relpath(path, root)))

    return sorted(range(len(files)), key=lambda i: (linked(files[i]), i))


def _identity(path: Path) -> object:
    """What makes two paths the same file: its device and inode (a symbolic or a hard link reaches the same
    one), or its real path (links resolved) when it cannot be stat'ed."""
    try:
        st = os.stat(path)
        return st.st_dev, st.st_ino
    except OSError:
        return os.path.realpath(path)


def unique_files(files: list[Path], labels: list[str], where: str, order: list[int] | None = None,
                 splits: list[str] | None = None) -> list[int]:
    """The positions to keep so that each real file (symbolic and hard links resolved) is used once: the first
    of its copies in `order` (default: listing order). A warning says how many copies were dropped, and another
    how many files had copies with another label (or split), with an example."""
    kept: dict[object, int] = {}
    dropped: list[int] = []
    conflicts: dict[object, int] = {}
    for i in order if order is not None else range(len(files)):
        real = _identity(files[i])
        first = kept.setdefault(real, i)
        if first == i:
            continue
        dropped.append(i)
        if labels[i] != labels[first] or (splits is not None and splits[i] != splits[first]):
            conflicts.setdefault(real, i)
    if not dropped:
        return list(range(len(files)))
    log.warning(f"{where}: {len(dropped)} duplicate(s) dropped: {len(files) - len(dropped)} distinct image files "
                f"are listed {len(files)} times (through links or repeated rows); each file is used once, by its "
                "real path.")
    if conflicts:
        real, i = next(iter(conflicts.items()))
        first = kept[real]
        tag = (lambda j: f"{labels[j]!r}" + (f" in {splits[j] or 'no split'}" if splits is not None else ""))
        rule = "the class and split of the folder it is really in" if order is not None else "its first row's"
        log.warning(f"{where}: {len(conflicts)} of these file(s) have copies with another label or split "
                    f"(e.g. {files[first]} as {tag(first)}, also {files[i]} as {tag(i)}): each keeps {rule}.")
    return sorted(kept.values())


def read_label_csv(path: Path, table: tuple[list[dict], list[str]] | None = None
                   ) -> tuple[list[Path], list[str], list[str] | None]:
    """(files, labels, splits or None) of a CSV with a header naming path and label (and optionally split); `table`:
    its rows and header when read already (read_csv_table)."""
    rows, fieldnames = table or read_csv_table(path)
    header = [h.strip().lower() for h in fieldnames]
    if not {"path", "label"} <= set(header):
        raise UserError(f"{path} must have 'path' and 'label' columns; its header is {','.join(header)}.")
    keys = {h.strip().lower(): h for h in fieldnames}
    files, labels, splits = [], [], []
    for row in rows:
        file, label = (row[keys["path"]] or "").strip(), (row[keys["label"]] or "").strip()
        if not file or not label:
            raise UserError(f"{path}: a row has an empty path or label ({dict(row)}).")
        files.append(csv_path(path, file))
        labels.append(label)
        splits.append((row.get(keys.get("split", "")) or "").strip().lower())
    keep, splits = unique_rows(path, files, labels, splits if "split" in keys else None)
    return [files[i] for i in keep], [labels[i] for i in keep], splits


def read_csv_table(path: Path) -> tuple[list[dict], list[str]]:
    """The rows (dicts by header name) and the header names of a label CSV that has at least one row."""
    if not path.is_file():
        raise UserError(f"dataset.file={path} does not exist; give a CSV file of path,label rows.")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read {path} as a CSV file: {exc}") from None
    if not rows:
        raise UserError(f"{path} has no rows; it needs a header line 'path,label' and one row per image.")
    return rows, [h for h in rows[0].keys() if h is not None]


def csv_path(csv_file: Path, file: str) -> Path:
    """A path a CSV row names: relative to the CSV file's folder unless absolute."""
    return (csv_file.parent / file) if not os.path.isabs(file) else Path(file)


def unique_rows(path: Path, files: list[Path], labels: list[str], splits: list[str] | None
                ) -> tuple[list[int], list[str] | None]:
    """The rows to keep (each real file once, unique_files) and their splits (None without a split column),
    which must be train, val or test."""
    keep = unique_files(files, labels, str(path), splits=splits)
    if splits is None:
        return keep, None
    splits = [splits[i] for i in keep]
    if bad := sorted(set(splits) - {"train", "val", "test"}):
        raise UserError(f"{path}: the split column holds {', '.join(map(repr, bad))}; use train, val or test.")
    return keep, splits


def sorted_classes(labels: list[str]) -> list[str]:
    """Class names in a natural order: numerically when every label is a whole number, else alphabetically."""
    unique = set(labels)
    if all(label.lstrip("-").isdigit() for label in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def _extensions() -> set[str]:
    from imgcls_cli.data.decode import IMAGE_EXTENSIONS

    return set(IMAGE_EXTENSIONS)


def auto_shape(paths: list[Path]) -> tuple[int, int, tuple[str, str]]:
    """(image_size, channels, (what to log for each)) for image_size/channels=auto: the median of the images'
    longer sides, rounded to a multiple of 8 and kept within 8..224, and 1 channel when every image is gray.

    Headers are read (PNG, JPEG, BMP, WebP, TIFF), not pixels: of every file, or of a fixed sample of AUTO_SAMPLE
    files (the same whatever the seed) when there are more; a file whose header does not say whether it is gray
    (a colour JPEG of gray pixels, a palette PNG) is decoded, at most AUTO_DECODES of them, stopping at the first
    colour image."""
    n = len(paths)
    picked = range(n) if n <= AUTO_SAMPLE else np.sort(np.random.default_rng(0).choice(n, AUTO_SAMPLE, replace=False))
    sides, unknown, colour, decoded = [], [], None, 0
    for i in picked:
        info = image_header(paths[i])
        if info is None and decoded < AUTO_DECODES:
            decoded += 1
            try:
                info = image_shape(paths[i])
            except DecodeError:
                continue
        if info is None:
            continue
        width, height, gray = info
        sides.append(max(width, height))
        if gray is False and colour is None:
            colour = paths[i]
        elif gray is None:
            unknown.append(paths[i])
    checked = len(sides) - len(unknown)
    for path in unknown:
        if colour is not None or decoded >= AUTO_DECODES:
            break
        decoded += 1
        checked += 1
        try:
            if not image_shape(path)[2]:
                colour = path
        except DecodeError:
            pass
    if not sides:
        size, channels = AUTO_FALLBACK
        return size, channels, (f"image_size auto: {size} (no image header could be read)",
                                f"channels auto: {channels} (no image header could be read)")
    median = float(np.median(sides))
    size = min(AUTO_MAX_SIZE, max(AUTO_MIN_SIZE, int(median / 8 + 0.5) * 8))
    of = f"{len(sides)} images" + (f", a sample of the {n}" if n > len(picked) else "")
    capped = f"; median {median:g}, capped at {AUTO_MAX_SIZE}" if median > AUTO_MAX_SIZE + 4 else ""
    said_size = f"image_size auto: {size} (median of {of}{capped})"
    if colour is not None:
        return size, 3, (said_size, f"channels auto: 3 (colour images, e.g. {colour})")
    every = "every image is gray" if n == checked else f"every one of the {checked} images checked is gray"
    return size, 1, (said_size, f"channels auto: 1 ({every})")
