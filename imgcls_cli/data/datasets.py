"""Dataset registry: each builder returns the raw images; splitting, subsets and statistics are shared."""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from imgcls_cli.data.stores import ArrayStore, FileStore, Store
from imgcls_cli.data.splits import stratified_folds, stratified_split, stratified_subset
from imgcls_cli.errors import UserError, as_float, as_int
from imgcls_cli.registry import Registry

DATASETS: Registry = Registry("dataset")
log = logging.getLogger("imgcls")
DEFAULT_ROOT = Path.home() / ".cache" / "imgcls" / "data"
SPLITS = ("train", "val", "test")
RESIZE_CHUNK_BYTES = 256 * 2**20
# Dataset keys the training loop reads (the loss and the sampler), not the dataset builders.
TRAINING_KEYS = ("class_weights", "sampler")
AUTO = "auto"
# dataset.image_size: at most 2048 (a 3 x 2048 x 2048 image is 12.6 MB as uint8, 50 MB as a float tensor).
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 2048
BUILD_SIZE, BUILD_CHANNELS = 32, 3  # what a generating builder (synthetic) makes for image_size/channels=auto


@dataclass
class Source:
    """What a builder returns: uint8 images (N, C, H, W), labels, class names, optional predefined splits."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    ids: list[str] | None = None
    id_column: str = "index"
    predefined: dict[str, np.ndarray] | None = None  # split name -> indices, when the data brings its own
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of files that did not decode
    paths: list[Path] | None = None  # image files not decoded yet (images is then empty); load_dataset places them
    split_names: list[str] | None = None  # per file: the split its folder or CSV row names ("" or None: not named)
    on_bad_file: str = "skip"  # skip | error, for files that do not decode


@dataclass
class Split:
    images: torch.Tensor | Store  # uint8 (N, C, H, W) in memory, or a store read a batch at a time
    labels: torch.Tensor  # int64 (N,)
    ids: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.images, torch.Tensor)


@dataclass
class DatasetBundle:
    name: str
    classes: list[str]
    channels: int
    image_size: int
    splits: dict[str, Split]
    mean: list[float]
    std: list[float]
    id_column: str = "index"
    split_table: list[tuple[str, str]] = field(default_factory=list)  # (id, split) where the tool split the data
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of files that did not decode

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 (N, C, H, W) batch to size x size: area when shrinking, bilinear when enlarging."""
    if images.shape[-2:] == (size, size):
        return images
    mode = "area" if size < images.shape[-1] else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    out = np.empty((len(images), images.shape[1], size, size), np.uint8)
    # In chunks of ~256 MB of float32, so resizing a large dataset never holds it all as floats.
    chunk = max(1, RESIZE_CHUNK_BYTES // (4 * images.shape[1] * max(size, images.shape[-1]) ** 2))
    for lo in range(0, len(images), chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[lo:lo + chunk])).float()
        x = F.interpolate(x, size=(size, size), mode=mode, **kwargs)
        out[lo:lo + chunk] = x.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """Grayscale <-> RGB for a uint8 (N, C, H, W) batch (ITU-R 601 luma, as OpenCV)."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return np.repeat(images, 3, axis=1)
    if have == 3 and channels == 1:
        luma = images.astype(np.float32).transpose(0, 2, 3, 1) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[:, None]
    raise UserError(f"dataset.channels must be 1 or 3, not {channels}.")


def _check_fraction(key: str, value: float) -> None:
    if not 0.0 <= as_float(value, f"dataset.{key}") < 1.0:
        raise UserError(f"dataset.{key} must be in [0, 1), not {value}.")


def _split_indices(source: Source, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    if source.predefined is not None:
        return source.predefined
    _check_fraction("val_fraction", val_fraction)
    _check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1.0:
        raise UserError("dataset.val_fraction + dataset.test_fraction must leave some data to train on (sum < 1).")
    val, test, train = stratified_split(source.labels, [val_fraction, test_fraction], seed)
    _check_carved(source.labels, {"val": (val_fraction, val), "test": (test_fraction, test)})
    return {"train": train, "val": val, "test": test}


SPLIT_WORDS = {"val": "validation", "test": "test"}


def _check_carved(labels: np.ndarray, carved: dict[str, tuple[float, np.ndarray]]) -> None:
    """A split carved with a fraction > 0 that came out empty: the classes are too small for the fraction (it is
    taken per class, rounded), which is the cause to give, not the fraction."""
    for split, (fraction, part) in carved.items():
        if fraction <= 0 or len(part):
            continue
        classes, counts = np.unique(labels, return_counts=True)
        biggest = int(counts.max()) if len(counts) else 0
        sizes = (f"{len(classes)} classes with {biggest} image(s) each" if counts.min() == biggest
                 else f"{len(classes)} classes with at most {biggest} image(s) each")
        need = math.ceil(100 / max(biggest, 1)) / 100
        fix = (f"raise dataset.{split}_fraction to {need} or more, " if need < 1 - 1e-9 else "") + \
            "add images"
        raise UserError(
            f"dataset.{split}_fraction={fraction} leaves no {SPLIT_WORDS[split]} image: {sizes} are too few "
            f"({fraction} of {biggest} rounds to 0 per class); {fix}, or set dataset.{split}_fraction=0 to go "
            f"without a {SPLIT_WORDS[split]} split.")


def _folds(folds: Any, fold: Any) -> tuple[int | None, int]:
    if folds is None:
        return None, 0
    folds = as_int(folds, "dataset.folds", minimum=2)
    fold = as_int(fold, "dataset.fold", minimum=0)
    if fold >= folds:
        raise UserError(f"dataset.fold must be in 0..{folds - 1} for dataset.folds={folds}, not {fold}.")
    return folds, fold


def _fold_indices(indices: dict[str, np.ndarray], labels: np.ndarray, folds: int, fold: int,
                  seed: int, classes: list[str] | None = None) -> dict[str, np.ndarray]:
    """k-fold cross-validation over train + val (stratified, seeded): fold `fold` validates, the rest train.
    Every fold must see every class: folds may not exceed the images of the smallest class."""
    pool = np.sort(np.concatenate([indices["train"], indices["val"]]))
    present, counts = np.unique(labels[pool], return_counts=True)
    if len(counts) and folds > counts.min():
        smallest = int(present[np.argmin(counts)])
        name = classes[smallest] if classes and smallest < len(classes) else str(smallest)
        fix = (f"use dataset.folds between 2 and {int(counts.min())}" if counts.min() >= 2
               else "add images of it")
        raise UserError(f"dataset.folds={folds} is more than the {int(counts.min())} image(s) of class '{name}' in "
                        f"train+val: every fold needs an image of each class; {fix}.")
    parts = stratified_folds(labels[pool], folds, seed)
    val = pool[parts[fold]]
    train = pool[np.sort(np.concatenate([p for i, p in enumerate(parts) if i != fold]))]
    return {"train": train, "val": val, "test": indices["test"]}


def _indices_from_file(path: Path, ids: list[str]) -> dict[str, np.ndarray]:
    """The splits a training run wrote (splits.csv): the same images in the same splits, whatever was added since."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))[1:]
    except OSError as exc:
        raise UserError(f"cannot read the splits file {path}: {exc.strerror or exc}") from None
    from imgcls_cli.rundir import unescape_cell  # ids a spreadsheet would take for formulas are written quoted

    where = {unescape_cell(row[0]): row[1] for row in rows if len(row) >= 2}
    known = [(i, where.get(sample_id)) for i, sample_id in enumerate(ids)]
    return {s: np.array([i for i, split in known if split == s], dtype=np.int64) for s in SPLITS}


def _given_stats(mean: Any, std: Any, channels: int) -> tuple[list[float], list[float]] | None:
    """dataset.mean and dataset.std (fractions of 255, one per channel, or one for all), or None to compute them."""
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        raise UserError("give both dataset.mean and dataset.std, or neither (then they are computed on train).")
    values = []
    for key, v in (("mean", mean), ("std", std)):
        v = [v] if isinstance(v, (int, float, str)) else list(v)
        v = [as_float(x, f"dataset.{key}") for x in v]
        if len(v) == 1:
            v *= channels
        if len(v) != channels or (key == "std" and min(v) <= 0):
            raise UserError(f"dataset.{key} must be {channels} number(s){' > 0' if key == 'std' else ''}, not {v}.")
        values.append(v)
    return values[0], values[1]


def _limit(name: str, value: Any) -> int | None:
    if value is None:
        return None
    return as_int(value, f"dataset.{name}", minimum=1)


def load_dataset(cfg: dict[str, Any], seed: int) -> DatasetBundle:
    """Build the dataset named cfg['name'] and split it: train/val/test uint8 tensors plus statistics."""
    cfg = dict(cfg)
    name = cfg.pop("name")
    builder = DATASETS.get(name)
    image_size = _image_size(cfg.pop("image_size"))
    channels = _channels(cfg.pop("channels"))
    val_fraction = as_float(cfg.pop("val_fraction", 0.0), "dataset.val_fraction")
    test_fraction = as_float(cfg.pop("test_fraction", 0.0), "dataset.test_fraction")
    max_train = _limit("max_train_samples", cfg.pop("max_train_samples", None))
    max_eval = _limit("max_eval_samples", cfg.pop("max_eval_samples", None))
    folds, fold = _folds(cfg.pop("folds", None), cfg.pop("fold", 0))
    mean_std = cfg.pop("mean", None), cfg.pop("std", None)
    splits_file = cfg.pop("splits_file", None)
    split_seed = cfg.pop("split_seed", None)  # null: the run's seed; fixed: the same splits for every seed
    seed = seed if split_seed is None else as_int(split_seed, "dataset.split_seed", minimum=0)
    placement = Placement.from_config(cfg)
    for key in TRAINING_KEYS:
        cfg.pop(key, None)
    source = builder(image_size=image_size or BUILD_SIZE, channels=channels or BUILD_CHANNELS, seed=seed,
                     val_fraction=val_fraction, test_fraction=test_fraction, **cfg)
    if image_size is None or channels is None:
        image_size, channels = _resolve_auto(source, image_size, channels)
    given_stats = _given_stats(*mean_std, channels)
    _check_classes(name, source.classes)
    if source.paths is not None:
        placement.check_fits(len(source.paths), channels, image_size)
        source = _place_files(source, channels, image_size, placement, seed, val_fraction, test_fraction)

    ids = source.ids or [str(i) for i in range(len(source.labels))]
    if splits_file:
        indices = _indices_from_file(Path(splits_file), ids)
    else:
        indices = _split_indices(source, val_fraction, test_fraction, seed)
        if folds:
            indices = _fold_indices(indices, source.labels, folds, fold, seed, list(source.classes))
    split_table = [(ids[i], split) for split in SPLITS for i in indices[split]]
    used = {}
    for split in SPLITS:
        idx = indices[split]
        limit = max_train if split == "train" else max_eval
        used[split] = idx[stratified_subset(source.labels[idx], limit, seed)]
    n_used = sum(map(len, used.values()))
    if not isinstance(source.images, (FileStore, ArrayStore)):
        placement.check_fits(n_used, channels, image_size)
    in_memory = placement.in_memory(n_used * channels * image_size ** 2)
    splits = {}
    for split, idx in used.items():
        if isinstance(source.images, (FileStore, ArrayStore)):  # file datasets are placed already
            images: torch.Tensor | Store = source.images.take(idx)
        elif in_memory:  # only what is used is resized
            images = torch.from_numpy(np.ascontiguousarray(
                convert_channels(resize_batch(source.images[idx], image_size), channels)))
        else:
            images = ArrayStore(source.images, idx, channels, image_size)
        splits[split] = Split(images, torch.from_numpy(source.labels[idx].astype(np.int64)), [ids[i] for i in idx])
    if len(splits["train"]) == 0:
        raise UserError(f"dataset '{name}' has no training images.")
    if len(present := np.unique(splits["train"].labels.numpy())) < 2:
        only = source.classes[int(present[0])]
        raise UserError(f"the training split of dataset '{name}' holds images of one class only ('{only}'): a "
                        "classifier needs images of at least 2 classes to learn from; add images of the other "
                        "classes to it (or raise dataset.max_train_samples).")
    skipped = list(source.skipped)
    if given_stats:
        mean, std = given_stats
    else:
        mean, std = channel_stats(_stats_sample(splits["train"].images, seed, skipped))
    return DatasetBundle(name, list(source.classes), channels, image_size, splits, mean, std,
                         source.id_column, sorted(split_table, key=lambda r: _id_key(r[0])), skipped)


def _image_size(value: Any) -> int | None:
    """dataset.image_size: a whole number in MIN_IMAGE_SIZE..MAX_IMAGE_SIZE, or None for auto."""
    if value == AUTO:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_IMAGE_SIZE <= value <= MAX_IMAGE_SIZE:
        raise UserError(f"dataset.image_size must be a whole number from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} "
                        f"(pixels a side), or auto, not {value!r}.")
    return value


def _channels(value: Any) -> int | None:
    """dataset.channels: 1 or 3, or None for auto."""
    if value == AUTO:
        return None
    if isinstance(value, bool) or value not in (1, 3):
        raise UserError(f"dataset.channels must be 1 or 3 (or auto), not {value!r}.")
    return int(value)


def _check_classes(name: str, classes: list[str]) -> None:
    if len(classes) < 2:
        found = f"one class ('{classes[0]}')" if classes else "no class"
        raise UserError(f"dataset '{name}' has {found}: a classifier needs at least 2 classes to tell apart; add "
                        "the images of the other classes (a class folder or CSV label each).")


def _resolve_auto(source: Source, image_size: int | None, channels: int | None) -> tuple[int, int]:
    """image_size / channels = auto: for image files, the median of their longer sides (a multiple of 8, from 8
    to 224) and 1 channel when every image is gray; for a dataset of arrays, its own size and channels."""
    if source.paths is not None:
        from imgcls_cli.data.files import auto_shape

        found_size, found_channels, how = auto_shape(source.paths)
    else:
        found_size, found_channels = int(max(source.images.shape[-2:])), int(source.images.shape[1])
        how = (f"image_size auto: {found_size} (the dataset's own)", f"channels auto: {found_channels} (the "
               "dataset's own)")
    said = [how[0]] * (image_size is None) + [how[1]] * (channels is None)
    log.info(", ".join(said))
    return (image_size or found_size), (channels or found_channels)


@dataclass
class Placement:
    """Where the images live: dataset.in_memory (auto: when their uint8 size fits memory_budget_gb), and
    dataset.cache (decode image files once into a uint8 memmap under cache_dir, reused while the files stay)."""

    mode: str = "auto"
    budget_bytes: float = 2e9
    cache: bool = False
    cache_dir: Path = DEFAULT_ROOT.parent / "decoded"

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Placement:
        mode = cfg.pop("in_memory", "auto")
        mode = {True: "true", False: "false"}.get(mode, mode)
        if mode not in ("auto", "true", "false"):
            raise UserError(f"dataset.in_memory must be auto, true or false, not '{mode}'.")
        budget = as_float(cfg.pop("memory_budget_gb", 2), "dataset.memory_budget_gb")
        if budget <= 0:
            raise UserError(f"dataset.memory_budget_gb must be > 0, not {budget}.")
        cache = cfg.pop("cache", False)
        if not isinstance(cache, bool):
            raise UserError(f"dataset.cache must be true or false, not '{cache}'.")
        cache_dir = cfg.pop("cache_dir", None)
        return cls(mode, budget * 1e9, cache, Path(cache_dir).expanduser() if cache_dir else cls.cache_dir)

    def in_memory(self, nbytes: int) -> bool:
        return self.mode == "true" or (self.mode == "auto" and nbytes <= self.budget_bytes)

    def check_fits(self, count: int, channels: int, size: int) -> None:
        """dataset.in_memory=true for more uint8 images than this machine has memory: one line, not an
        allocation that fails (or swaps) half-way."""
        nbytes = count * channels * size * size
        total = _physical_memory()
        if self.mode == "true" and total and nbytes > total:
            raise UserError(f"dataset.in_memory=true needs {nbytes / 1e9:.1f} GB for {count} images of "
                            f"{channels}x{size}x{size}, more than this machine's {total / 1e9:.1f} GB of memory; "
                            "use dataset.in_memory=auto (images read a batch at a time) or a smaller "
                            "dataset.image_size.")


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _place_files(source: Source, channels: int, size: int, placement: Placement, seed: int, val_fraction: float,
                 test_fraction: float) -> Source:
    """Decode the files into memory, into the decoded cache, or leave them to be decoded a batch at a time."""
    from imgcls_cli.data.files import decode_files
    from imgcls_cli.data.stores import decoded_cache

    paths = source.paths or []
    in_memory = placement.in_memory(len(paths) * channels * size * size)
    skipped: list[tuple[str, str]] = []
    if placement.cache:
        array, bad, built = decoded_cache(paths, channels, size, placement.cache_dir)
        log.info(f"decoded cache {'written' if built else 'read'}: {placement.cache_dir} "
                 f"({array.nbytes / 1e6:.0f} MB)")
        if bad and source.on_bad_file == "error":
            decode_files([paths[i] for i, _ in bad], channels, size, "error")  # the one-line error naming them
        keep = np.setdiff1d(np.arange(len(paths)), [i for i, _ in bad]).astype(np.int64)
        skipped = [(str(paths[i]), why) for i, why in bad]
        images: Any = np.asarray(array[keep]) if in_memory else ArrayStore(array, keep, channels, size)
    elif in_memory:
        decoded = decode_files(paths, channels, size, source.on_bad_file)
        images, keep, skipped = decoded.images, decoded.keep, decoded.skipped
    else:  # bad files are found (and left out of their batch) as they are read
        images, keep = FileStore(paths, channels, size), np.arange(len(paths))
    labels = source.labels[keep]
    if empty := [c for c, n in zip(source.classes, np.bincount(labels, minlength=len(source.classes))) if n == 0]:
        raise UserError(f"class(es) {', '.join(empty)} have no readable image; add images or remove the class.")
    predefined = None
    if source.split_names is not None:
        predefined = _named_splits(np.array([source.split_names[i] for i in keep]), labels, seed,
                                   val_fraction, test_fraction)
    ids = [source.ids[i] for i in keep] if source.ids else None
    return Source(images, labels, source.classes, ids, source.id_column, predefined, skipped)


def _named_splits(names: np.ndarray, labels: np.ndarray, seed: int, val_fraction: float,
                  test_fraction: float) -> dict[str, np.ndarray]:
    """The splits the files name; a split that no file names is carved from train (stratified, seeded)."""
    predefined = {s: np.flatnonzero(names == s) for s in SPLITS}
    if len(predefined["train"]) == 0:
        raise UserError("no readable training images (none in train/ or in rows with split=train).")
    carve = [(s, f) for s, f in (("val", val_fraction), ("test", test_fraction)) if len(predefined[s]) == 0]
    for key, value in carve:
        _check_fraction(f"{key}_fraction", value)
    parts = stratified_split(labels[predefined["train"]], [f for _, f in carve], seed)
    _check_carved(labels[predefined["train"]], {s: (f, part) for (s, f), part in zip(carve, parts)})
    for (split, _), part in zip(carve, parts):
        predefined[split] = predefined["train"][part]
    predefined["train"] = predefined["train"][parts[-1]]
    return predefined


STATS_SAMPLE = 4096  # images read to estimate mean and std when the train split is not in memory


def _stats_sample(images: torch.Tensor | Store, seed: int, skipped: list[tuple[str, str]]) -> torch.Tensor:
    """The train images to compute mean and std on: all in memory, else a seeded sample read from the store
    (files it finds unreadable are added to skipped)."""
    if isinstance(images, torch.Tensor):
        return images
    n = len(images)
    positions = np.sort(np.random.default_rng(seed).permutation(n)[:STATS_SAMPLE])
    batch, ok = images.load(positions)
    skipped += [(images.name(int(p)), images.why(int(p))) for p in positions[~ok]]
    return torch.from_numpy(batch[ok])


def _id_key(value: str) -> tuple[int, Any]:
    return (0, int(value)) if value.isdigit() else (1, value)


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, as fractions of 255."""
    x = images.double().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    std = x.std(dim=1).clamp_min(1e-3)
    return x.mean(dim=1).tolist(), std.tolist()


@DATASETS.register("digits")
def digits(*, image_size: int, channels: int, seed: int, **_: Any) -> Source:
    """scikit-learn's 1,797 real 8x8 handwritten digits (values 0-16), scaled to uint8."""
    pixels, target = _digits_arrays()
    images = np.clip(np.rint(pixels.reshape(-1, 8, 8) * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]
    return Source(images, target.astype(np.int64), [str(c) for c in range(10)])


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The digits' (1797, 64) pixels and labels, read from the file scikit-learn ships (importing scikit-learn
    itself takes a second), or through load_digits when the file is not where it used to be."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            return table[:, :-1], table[:, -1]
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data, data.target


@DATASETS.register("synthetic")
def synthetic(*, image_size: int, channels: int, seed: int, num_samples: int = 2000, num_classes: int = 5,
              **_: Any) -> Source:
    """Generated stripe, ring and noise patterns: a dataset that needs no files."""
    from imgcls_cli.data.synthetic import CLASS_NAMES, make_synthetic

    num_classes = as_int(num_classes, "dataset.num_classes")
    num_samples = as_int(num_samples, "dataset.num_samples")
    if not 2 <= num_classes <= len(CLASS_NAMES):
        raise UserError(f"dataset.num_classes must be between 2 and {len(CLASS_NAMES)} for synthetic, not {num_classes}.")
    if int(num_samples) < 10 * int(num_classes):
        raise UserError(f"dataset.num_samples must be at least 10 per class ({10 * int(num_classes)}), not {num_samples}.")
    images, labels = make_synthetic(int(num_samples), int(num_classes), image_size, channels, seed)
    return Source(images, labels, list(CLASS_NAMES[: int(num_classes)]))


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
IDX_DATASETS = {
    # name: (torchvision class, folder under the root, class names, system folders searched too)
    "mnist": ("MNIST", "MNIST", [str(i) for i in range(10)], []),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST", FASHION_CLASSES, ["/usr/share/datasets/fashion-mnist"]),
}


def _official_splits(data: dict[str, tuple[np.ndarray, np.ndarray]], classes: list[str], val_fraction: float,
                     seed: int) -> Source:
    """Official train and test sets; the val split is carved from train (stratified, seeded)."""
    train_x, train_y = data["train"]
    test_x, test_y = data["test"]
    _check_fraction("val_fraction", val_fraction)
    val, train = stratified_split(train_y, [val_fraction], seed)
    n = len(train_y)
    ids = [f"train/{i}" for i in range(n)] + [f"test/{i}" for i in range(len(test_y))]
    return Source(np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y]), classes, ids,
                  predefined={"train": train, "val": val, "test": np.arange(n, n + len(test_y))})


def _data_root(root: str | None) -> Path:
    return Path(root).expanduser() if root else DEFAULT_ROOT


def _download(name: str, tv_class: str, base: Path) -> None:
    """torchvision's downloader for both official splits; one line when it cannot."""
    import torchvision

    try:
        for train in (True, False):
            getattr(torchvision.datasets, tv_class)(root=str(base), train=train, download=True)
    except Exception as exc:  # no network, a proxy, a full disk: one line either way
        raise UserError(f"could not download {name} into {base}: {str(exc).splitlines()[0]}") from None


def _idx_source(name: str, root: str | None, download: bool, val_fraction: float, seed: int) -> Source:
    from imgcls_cli.data.idx import load_idx_dataset

    tv_class, folder, classes, system = IDX_DATASETS[name]
    base = _data_root(root)
    candidates = [base, base / folder / "raw", base / folder, *map(Path, system)]
    data = load_idx_dataset(candidates)
    if data is None and download:
        _download(name, tv_class, base)
        data = load_idx_dataset(candidates)
    if data is None:
        where = ", ".join(str(c) for c in candidates)
        hint = " or `apt-get install dataset-fashion-mnist`" if name == "fashion_mnist" else ""
        raise UserError(f"{name} files (train-images-idx3-ubyte[.gz] and the three others) not found in: {where}. "
                        f"Set dataset.root=FOLDER, add dataset.download=true{hint}.")
    return _official_splits(data, classes, val_fraction, seed)


@DATASETS.register("mnist")
def mnist(*, seed: int, root: str | None = None, download: bool = False, val_fraction: float = 0.1,
          **_: Any) -> Source:
    """LeCun's handwritten digits: 60,000 train and 10,000 test 28x28 images (IDX files)."""
    return _idx_source("mnist", root, bool(download), val_fraction, seed)


@DATASETS.register("fashion_mnist")
def fashion_mnist(*, seed: int, root: str | None = None, download: bool = False, val_fraction: float = 0.1,
                  **_: Any) -> Source:
    """Zalando's Fashion-MNIST: 60,000 train and 10,000 test 28x28 images of 10 clothing classes (IDX files)."""
    return _idx_source("fashion_mnist", root, bool(download), val_fraction, seed)


def _cifar_source(name: str, root: str | None, download: bool, val_fraction: float, seed: int) -> Source:
    from imgcls_cli.data.cifar import LAYOUTS, find_folder, load_cifar

    base = _data_root(root)
    folder = find_folder(name, [base])
    if folder is None and download:
        _download(name, {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}[name], base)
        folder = find_folder(name, [base])
    if folder is None:
        raise UserError(f"{name} batches (the python version, folder {LAYOUTS[name][0]}) not found in {base}. "
                        "Set dataset.root=FOLDER or add dataset.download=true.")
    data, classes = load_cifar(name, folder)
    return _official_splits(data, classes, val_fraction, seed)


@DATASETS.register("cifar10")
def cifar10(*, seed: int, root: str | None = None, download: bool = False, val_fraction: float = 0.1,
            **_: Any) -> Source:
    """CIFAR-10: 50,000 train and 10,000 test 32x32 colour images of 10 classes (python batches)."""
    return _cifar_source("cifar10", root, bool(download), val_fraction, seed)


@DATASETS.register("cifar100")
def cifar100(*, seed: int, root: str | None = None, download: bool = False, val_fraction: float = 0.1,
             **_: Any) -> Source:
    """CIFAR-100: 50,000 train and 10,000 test 32x32 colour images of 100 fine classes (python batches)."""
    return _cifar_source("cifar100", root, bool(download), val_fraction, seed)


def _file_source(files: list[Path], labels: list[str], splits: list[str] | None, classes: list[str], base: Path,
                 on_bad_file: str) -> Source:
    """Image files and their labels, not decoded yet: load_dataset decides where they live, then splits them."""
    from imgcls_cli.data.files import BAD_FILE_CHOICES

    if on_bad_file not in BAD_FILE_CHOICES:
        raise UserError(f"dataset.on_bad_file must be skip or error, not '{on_bad_file}'.")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[label] for label in labels], dtype=np.int64)
    ids = [Path(os.path.relpath(f, base)).as_posix() for f in files]
    return Source(np.empty((0, 0, 0, 0), np.uint8), y, classes, ids, "path", paths=list(files), split_names=splits,
                  on_bad_file=on_bad_file)


@DATASETS.register("imagefolder")
def imagefolder(*, image_size: int, channels: int, seed: int, root: str | None = None, val_fraction: float = 0.1,
                test_fraction: float = 0.1, on_bad_file: str = "skip", **_: Any) -> Source:
    """A folder of class folders, or of train/ (val/, test/) class folders; any image format OpenCV reads."""
    from imgcls_cli.data.files import scan_imagefolder

    if not root:
        raise UserError("dataset=imagefolder needs dataset.root=FOLDER (class folders, or train/ val/ test/).")
    base = Path(root).expanduser()
    files, labels, classes, splits = scan_imagefolder(base)
    return _file_source(files, labels, splits, classes, base, on_bad_file)


@DATASETS.register("csv")
def csv_file(*, image_size: int, channels: int, seed: int, file: str | None = None, val_fraction: float = 0.1,
             test_fraction: float = 0.1, on_bad_file: str = "skip", **_: Any) -> Source:
    """A CSV of path,label rows (paths relative to the CSV file), with an optional split column."""
    from imgcls_cli.data.files import read_label_csv, sorted_classes

    if not file:
        raise UserError("dataset=csv needs dataset.file=LABELS.csv (columns path,label and optionally split).")
    path = Path(file).expanduser()
    files, labels, splits = read_label_csv(path)
    return _file_source(files, labels, splits, sorted_classes(labels), path.parent, on_bad_file)


from imgcls_cli.data import shifted  # noqa: E402,F401  (registers the shifted-domain datasets)
