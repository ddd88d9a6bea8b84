"""load_dataset: a registered builder's raw images, placed (in memory, in the decoded cache, or streamed a batch at
a time), split, subset and measured (per-channel mean and std), the same way for every dataset."""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imgcls_cli.data import mosaic, shifted  # noqa: F401  (register the mosaic and shifted-domain datasets)
from imgcls_cli.data.builders import DATASETS, DEFAULT_ROOT, Source
from imgcls_cli.data.multilabel import TASKS, check_label_sets, check_task, label_tensor, per_class
from imgcls_cli.data.pixels import convert_channels, resize_batch
from imgcls_cli.data.splits import (
    SPLITS, fold_indices, indices_from_file, named_splits, split_indices, stratified_subset,
)
from imgcls_cli.data.stores import ArrayStore, FileStore, Store
from imgcls_cli.errors import UserError
from imgcls_cli.specs.dataset import DatasetSpec

__all__ = ["DATASETS", "SPLITS", "TASKS", "DatasetBundle", "Split", "channel_stats", "convert_channels",
           "load_dataset", "resize_batch"]
log = logging.getLogger("imgcls")
BUILD_SIZE, BUILD_CHANNELS = 32, 3  # what a generating builder (synthetic) makes for image_size/channels=auto
_indices_from_file = indices_from_file  # the name callers outside data/ still import; goes once they use splits


@dataclass
class Split:
    images: torch.Tensor | Store  # uint8 (N, C, H, W) in memory, or a store read a batch at a time
    labels: torch.Tensor  # int64 (N,) class indices, or float32 (N, C) of 0/1 for multi-label data
    ids: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2

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

    @property
    def multilabel(self) -> bool:
        """Labels are sets (multi-hot rows, task=multilabel), not one class per image."""
        return self.splits["train"].multilabel


def load_dataset(spec: DatasetSpec | Mapping[str, Any], seed: int, task: str = "multiclass") -> DatasetBundle:
    """Build the dataset a DatasetSpec names and split it: train/val/test uint8 tensors plus statistics. A plain
    dataset config is checked into a DatasetSpec first. task=multilabel: labels are multi-hot float32 (N, C) rows
    (a dataset of label sets); multiclass: int64 class indices (a dataset of one label per image)."""
    if task not in TASKS:
        raise UserError(f"task must be {' or '.join(TASKS)}, not '{task}'.")
    if not isinstance(spec, DatasetSpec):
        spec = DatasetSpec.from_config(spec)
    builder = DATASETS.get(spec.name)
    seed = seed if spec.split_seed is None else spec.split_seed  # a fixed split_seed: the same splits every seed
    placement = Placement.from_spec(spec)
    source = builder(image_size=spec.image_size or BUILD_SIZE, channels=spec.channels or BUILD_CHANNELS, seed=seed,
                     val_fraction=spec.val_fraction, test_fraction=spec.test_fraction, task=task,
                     **spec.builder_options())
    check_task(spec.name, source.labels, task)
    image_size, channels = spec.image_size, spec.channels
    if image_size is None or channels is None:
        image_size, channels = _resolve_auto(source, image_size, channels)
    given_stats = spec.stats(channels)
    _check_classes(spec.name, source.classes)
    if source.paths is not None:
        placement.check_fits(len(source.paths), channels, image_size)
        source = _place_files(source, channels, image_size, placement, seed, spec.val_fraction, spec.test_fraction)
    ids = source.ids or [str(i) for i in range(len(source.labels))]
    indices = _indices(spec, source, ids, seed)
    split_table = [(ids[i], split) for split in SPLITS for i in indices[split]]
    splits = _subsets(spec, source, ids, indices, placement, channels, image_size, seed)
    _check_train(spec.name, splits["train"], source.classes)
    if task == "multilabel":
        check_label_sets(spec.name, {s: (split.labels.numpy(), split.ids) for s, split in splits.items()},
                         source.classes)
    skipped = list(source.skipped)
    mean, std = given_stats or channel_stats(_stats_sample(splits["train"].images, seed, skipped))
    return DatasetBundle(spec.name, list(source.classes), channels, image_size, splits, mean, std,
                         source.id_column, sorted(split_table, key=lambda r: _id_key(r[0])), skipped)


def _indices(spec: DatasetSpec, source: Source, ids: list[str], seed: int) -> dict[str, np.ndarray]:
    """Which images go to which split: a run's splits file, the data's own splits, or the fractions; then folds."""
    if spec.splits_file:
        return indices_from_file(Path(spec.splits_file), ids)
    if source.predefined is not None:
        indices = source.predefined
    else:
        indices = split_indices(source.labels, spec.val_fraction, spec.test_fraction, seed)
    if spec.folds:
        indices = fold_indices(indices, source.labels, spec.folds, spec.fold, seed, list(source.classes))
    return indices


def _subsets(spec: DatasetSpec, source: Source, ids: list[str], indices: dict[str, np.ndarray], placement: Placement,
             channels: int, image_size: int, seed: int) -> dict[str, Split]:
    """Each split's stratified subset (max_*_samples), in memory at the training shape or in a store."""
    used = {}
    for split in SPLITS:
        idx = indices[split]
        limit = spec.max_train_samples if split == "train" else spec.max_eval_samples
        used[split] = idx[stratified_subset(source.labels[idx], limit, seed)]
    n_used = sum(map(len, used.values()))
    placed = isinstance(source.images, (FileStore, ArrayStore))  # file datasets are placed already
    if not placed:
        placement.check_fits(n_used, channels, image_size)
    in_memory = placement.in_memory(n_used * channels * image_size ** 2)
    splits = {}
    for split, idx in used.items():
        if placed:
            images: torch.Tensor | Store = source.images.take(idx)
        elif in_memory:  # only what is used is resized
            images = torch.from_numpy(np.ascontiguousarray(
                convert_channels(resize_batch(source.images[idx], image_size), channels)))
        else:
            images = ArrayStore(source.images, idx, channels, image_size)
        splits[split] = Split(images, label_tensor(source.labels[idx]), [ids[i] for i in idx])
    return splits


def _check_train(name: str, train: Split, classes: list[str]) -> None:
    if len(train) == 0:
        raise UserError(f"dataset '{name}' has no training images.")
    if train.multilabel:
        return  # label sets: check_label_sets
    if len(present := np.unique(train.labels.numpy())) < 2:
        only = classes[int(present[0])]
        raise UserError(f"the training split of dataset '{name}' holds images of one class only ('{only}'): a "
                        "classifier needs images of at least 2 classes to learn from; add images of the other "
                        "classes to it (or raise dataset.max_train_samples).")


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
    def from_spec(cls, spec: DatasetSpec) -> Placement:
        cache_dir = Path(spec.cache_dir).expanduser() if spec.cache_dir else cls.cache_dir
        return cls(spec.in_memory, spec.memory_budget_gb * 1e9, spec.cache, cache_dir)

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
    if empty := [c for c, n in zip(source.classes, per_class(labels, len(source.classes))) if n == 0]:
        raise UserError(f"class(es) {', '.join(empty)} have no readable image; add images or remove the class.")
    predefined = None
    if source.split_names is not None:
        predefined = named_splits(np.array([source.split_names[i] for i in keep]), labels, seed,
                                   val_fraction, test_fraction)
    ids = [source.ids[i] for i in keep] if source.ids else None
    return Source(images, labels, source.classes, ids, source.id_column, predefined, skipped)


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
