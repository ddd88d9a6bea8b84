"""DatasetSpec: the dataset group checked once (sizes, fractions, limits, folds, statistics, placement and the
builders' own keys), so that loading a dataset reads attributes. Checks that need the data itself (a class too
small for a fraction, statistics for an `auto` channel count) are methods here or stay with the splitting."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imgcls_cli.errors import UserError, as_float, as_int

AUTO = "auto"
# dataset.image_size: at most 2048 (a 3 x 2048 x 2048 image is 12.6 MB as uint8, 50 MB as a float tensor).
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 2048
BAD_FILE_CHOICES = ("skip", "error")
MAX_MOSAICS = 1_000_000  # fashion_mnist_mosaic's num_train / num_test: 3.1 GB of 56x56 uint8 mosaics
IN_MEMORY_CHOICES = ("auto", "true", "false")
# Keys that only some builders read; each is passed to the builder where it was given.
BUILDER_KEYS = ("root", "download", "file", "on_bad_file", "num_samples", "num_classes", "pattern", "angle",
                "noise_std", "label_columns", "num_train", "num_test", "empty_prob", "mosaic_seed")


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset config, checked. image_size/channels None: auto (found from the images)."""

    name: str
    image_size: int | None = None
    channels: int | None = None
    val_fraction: float = 0.0
    test_fraction: float = 0.0
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    folds: int | None = None  # k-fold cross-validation over train + val; None: off
    fold: int = 0
    mean: tuple[float, ...] | None = None  # fractions of 255; one for every channel, or one per channel
    std: tuple[float, ...] | None = None
    splits_file: str | None = None  # a run's splits.csv: the same images in the same splits
    split_seed: int | None = None  # None: the run's seed
    in_memory: str = "auto"  # auto | true | false
    memory_budget_gb: float = 2.0
    cache: bool = False
    cache_dir: str | None = None
    class_weights: str | tuple[Any, ...] | None = None  # read by the loss: null | auto | one weight per class
    sampler: str | None = None  # read by the loader: null | balanced
    root: str | None = None
    download: bool | None = None
    file: str | None = None
    on_bad_file: str | None = None  # skip | error (image files)
    num_samples: int | None = None  # synthetic
    num_classes: int | None = None  # synthetic
    pattern: str | None = None  # synthetic: textures | patch
    angle: float | None = None  # fashion_mnist_rotated
    noise_std: float | None = None  # fashion_mnist_noisy
    label_columns: tuple[str, ...] | None = None  # csv, task=multilabel: one 0/1 column per label
    num_train: int | None = None  # fashion_mnist_mosaic: train mosaics (val carved from them)
    num_test: int | None = None  # fashion_mnist_mosaic: test mosaics
    empty_prob: float | None = None  # fashion_mnist_mosaic: probability that a cell is empty
    mosaic_seed: int | None = None  # fashion_mnist_mosaic: the mosaics' own seed

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> DatasetSpec:
        """Check a plain dataset config (the `dataset` group); one line for the first key that is wrong."""
        checked: dict[str, Any] = {
            "name": str(cfg["name"]),
            "image_size": _image_size(cfg.get("image_size", AUTO)),
            "channels": _channels(cfg.get("channels", AUTO)),
            "val_fraction": _fraction("val_fraction", cfg.get("val_fraction", 0.0)),
            "test_fraction": _fraction("test_fraction", cfg.get("test_fraction", 0.0)),
            "max_train_samples": _limit("max_train_samples", cfg.get("max_train_samples")),
            "max_eval_samples": _limit("max_eval_samples", cfg.get("max_eval_samples")),
        }
        checked["folds"], checked["fold"] = _folds(cfg.get("folds"), cfg.get("fold", 0))
        checked["splits_file"] = _optional_text(cfg.get("splits_file"))
        if cfg.get("split_seed") is not None:
            checked["split_seed"] = as_int(cfg["split_seed"], "dataset.split_seed", minimum=0)
        checked.update(_placement(cfg))
        checked.update(_builder_keys(cfg))
        checked["mean"], checked["std"] = _stats_pair(cfg.get("mean"), cfg.get("std"))
        checked["class_weights"] = _class_weights(cfg.get("class_weights"))
        checked["sampler"] = _sampler(cfg.get("sampler"))
        return cls(**checked)

    def builder_options(self) -> dict[str, Any]:
        """The builder-specific keys that were given, as the builder's keyword arguments."""
        return {key: getattr(self, key) for key in BUILDER_KEYS if getattr(self, key) is not None}

    def stats(self, channels: int) -> tuple[list[float], list[float]] | None:
        """dataset.mean and dataset.std for `channels` channels, or None to compute them on train."""
        if self.mean is None or self.std is None:
            return None
        values = []
        for key, given in (("mean", self.mean), ("std", self.std)):
            v = list(given)
            if len(v) == 1:
                v *= channels
            if len(v) != channels or (key == "std" and min(v) <= 0):
                raise UserError(f"dataset.{key} must be {channels} number(s){' > 0' if key == 'std' else ''}, "
                                f"not {v}.")
            values.append(v)
        return values[0], values[1]


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


def _fraction(key: str, value: Any) -> float:
    fraction = as_float(value, f"dataset.{key}")
    if not 0.0 <= fraction < 1.0:
        raise UserError(f"dataset.{key} must be in [0, 1), not {fraction}.")
    return fraction


def _limit(name: str, value: Any) -> int | None:
    if value is None:
        return None
    return as_int(value, f"dataset.{name}", minimum=1)


def _folds(folds: Any, fold: Any) -> tuple[int | None, int]:
    if folds is None:
        return None, 0
    folds = as_int(folds, "dataset.folds", minimum=2)
    fold = as_int(fold, "dataset.fold", minimum=0)
    if fold >= folds:
        raise UserError(f"dataset.fold must be in 0..{folds - 1} for dataset.folds={folds}, not {fold}.")
    return folds, fold


def _stats_pair(mean: Any, std: Any) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """dataset.mean and dataset.std as numbers (one, or one per channel), both or neither."""
    if mean is None and std is None:
        return None, None
    if mean is None or std is None:
        raise UserError("give both dataset.mean and dataset.std, or neither (then they are computed on train).")
    values = []
    for key, v in (("mean", mean), ("std", std)):
        v = [v] if isinstance(v, (int, float, str)) else list(v)
        values.append(tuple(as_float(x, f"dataset.{key}") for x in v))
    return values[0], values[1]


def _optional_text(value: Any) -> str | None:
    return str(value) if value else None


def _placement(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """dataset.in_memory, memory_budget_gb, cache and cache_dir."""
    mode = cfg.get("in_memory", "auto")
    mode = {True: "true", False: "false"}.get(mode, mode)
    if mode not in IN_MEMORY_CHOICES:
        raise UserError(f"dataset.in_memory must be auto, true or false, not '{mode}'.")
    budget = as_float(cfg.get("memory_budget_gb", 2), "dataset.memory_budget_gb")
    if budget <= 0:
        raise UserError(f"dataset.memory_budget_gb must be > 0, not {budget}.")
    cache = cfg.get("cache", False)
    if not isinstance(cache, bool):
        raise UserError(f"dataset.cache must be true or false, not '{cache}'.")
    return {"in_memory": mode, "memory_budget_gb": budget, "cache": cache,
            "cache_dir": _optional_text(cfg.get("cache_dir"))}


def _class_weights(value: Any) -> str | tuple[Any, ...] | None:
    """null, auto or a list (checked against the classes where the loss is built: it needs their number)."""
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _sampler(value: Any) -> str | None:
    if value not in (None, "balanced"):
        raise UserError(f"dataset.sampler must be null or balanced, not '{value}'.")
    return value


def _builder_keys(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The keys only some builders read, typed; a builder checks what only it knows (synthetic's class count)."""
    keys: dict[str, Any] = {"root": _optional_text(cfg.get("root")), "file": _optional_text(cfg.get("file"))}
    if cfg.get("download") is not None:
        keys["download"] = bool(cfg["download"])
    on_bad_file = cfg.get("on_bad_file")
    if on_bad_file is not None and on_bad_file not in BAD_FILE_CHOICES:
        raise UserError(f"dataset.on_bad_file must be skip or error, not '{on_bad_file}'.")
    keys["on_bad_file"] = on_bad_file
    for key in ("num_samples", "num_classes"):
        if cfg.get(key) is not None:
            keys[key] = as_int(cfg[key], f"dataset.{key}")
    if cfg.get("pattern") is not None:
        keys["pattern"] = str(cfg["pattern"])
    if cfg.get("angle") is not None:
        keys["angle"] = _angle(cfg["angle"])
    if cfg.get("noise_std") is not None:
        keys["noise_std"] = _noise_std(cfg["noise_std"])
    if cfg.get("label_columns") is not None:
        keys["label_columns"] = _label_columns(cfg["label_columns"])
    keys.update(_mosaic_keys(cfg))
    return keys


def _angle(value: Any) -> float:
    angle = as_float(value, "dataset.angle")
    if not math.isfinite(angle):
        raise UserError(f"dataset.angle must be a finite number of degrees, not {value!r}.")
    return angle


def _noise_std(value: Any) -> float:
    std = as_float(value, "dataset.noise_std")
    if not (math.isfinite(std) and std >= 0):
        raise UserError(f"dataset.noise_std must be a number >= 0 (a fraction of 255), not {value!r}.")
    return std


def _label_columns(value: Any) -> tuple[str, ...]:
    """dataset.label_columns: the names of a CSV's 0/1 columns, one per label, each once."""
    names = [value] if isinstance(value, str) else list(value) if isinstance(value, Sequence) else None
    if not names or any(not isinstance(n, str) or not n.strip() for n in names):
        raise UserError(f"dataset.label_columns must be a list of the CSV's 0/1 column names, e.g. "
                        f"[cat,dog], not {value!r}.")
    names = [n.strip() for n in names]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise UserError(f"dataset.label_columns names {', '.join(twice)} more than once; name each column once.")
    return tuple(names)


def _mosaic_keys(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """fashion_mnist_mosaic's sizes, empty-cell probability and seed."""
    keys: dict[str, Any] = {}
    for key in ("num_train", "num_test"):
        if cfg.get(key) is not None:
            keys[key] = as_int(cfg[key], f"dataset.{key}", minimum=1, maximum=MAX_MOSAICS)
    if cfg.get("mosaic_seed") is not None:
        keys["mosaic_seed"] = as_int(cfg["mosaic_seed"], "dataset.mosaic_seed", minimum=0)
    if cfg.get("empty_prob") is not None:
        prob = as_float(cfg["empty_prob"], "dataset.empty_prob")
        if not 0.0 <= prob < 1.0:
            raise UserError(f"dataset.empty_prob must be in [0, 1) (the chance that a cell is black), not {prob}.")
        keys["empty_prob"] = prob
    return keys
