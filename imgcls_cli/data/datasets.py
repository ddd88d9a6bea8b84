"""Dataset registry: each builder returns the raw images; splitting, subsets and statistics are shared."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from imgcls_cli.data.splits import stratified_split, stratified_subset
from imgcls_cli.errors import UserError, as_float, as_int
from imgcls_cli.registry import Registry

DATASETS: Registry = Registry("dataset")
SPLITS = ("train", "val", "test")
RESIZE_CHUNK_BYTES = 256 * 2**20


@dataclass
class Source:
    """What a builder returns: uint8 images (N, C, H, W), labels, class names, optional predefined splits."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    ids: list[str] | None = None
    id_column: str = "index"
    predefined: dict[str, np.ndarray] | None = None  # split name -> indices, when the data brings its own


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    ids: list[str]

    def __len__(self) -> int:
        return len(self.labels)


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
    return {"train": train, "val": val, "test": test}


def _limit(name: str, value: Any) -> int | None:
    if value is None:
        return None
    return as_int(value, f"dataset.{name}", minimum=1)


def load_dataset(cfg: dict[str, Any], seed: int) -> DatasetBundle:
    """Build the dataset named cfg['name'] and split it: train/val/test uint8 tensors plus statistics."""
    cfg = dict(cfg)
    name = cfg.pop("name")
    builder = DATASETS.get(name)
    image_size = as_int(cfg.pop("image_size"), "dataset.image_size", minimum=1)
    channels = as_int(cfg.pop("channels"), "dataset.channels")
    if channels not in (1, 3):
        raise UserError(f"dataset.channels must be 1 or 3, not {channels}.")
    val_fraction = as_float(cfg.pop("val_fraction", 0.0), "dataset.val_fraction")
    test_fraction = as_float(cfg.pop("test_fraction", 0.0), "dataset.test_fraction")
    max_train = _limit("max_train_samples", cfg.pop("max_train_samples", None))
    max_eval = _limit("max_eval_samples", cfg.pop("max_eval_samples", None))
    source = builder(image_size=image_size, channels=channels, seed=seed, val_fraction=val_fraction,
                     test_fraction=test_fraction, **cfg)

    ids = source.ids or [str(i) for i in range(len(source.labels))]
    indices = _split_indices(source, val_fraction, test_fraction, seed)
    split_table = [(ids[i], split) for split in SPLITS for i in indices[split]]
    splits = {}
    for split in SPLITS:
        idx = indices[split]
        limit = max_train if split == "train" else max_eval
        idx = idx[stratified_subset(source.labels[idx], limit, seed)]
        images = convert_channels(resize_batch(source.images[idx], image_size), channels)  # only what is used
        splits[split] = Split(
            torch.from_numpy(np.ascontiguousarray(images)),
            torch.from_numpy(source.labels[idx].astype(np.int64)),
            [ids[i] for i in idx],
        )
    if len(splits["train"]) == 0:
        raise UserError(f"dataset '{name}' has no training images.")
    mean, std = channel_stats(splits["train"].images)
    return DatasetBundle(name, list(source.classes), channels, image_size, splits, mean, std,
                         source.id_column, sorted(split_table, key=lambda r: _id_key(r[0])))


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
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.clip(np.rint(data.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]
    return Source(images, data.target.astype(np.int64), [str(c) for c in data.target_names])


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
DEFAULT_ROOT = Path.home() / ".cache" / "imgcls" / "data"


def _idx_source(name: str, root: str | None, download: bool, val_fraction: float, seed: int) -> Source:
    """Official train/test files; the val split is carved from train (stratified, seeded)."""
    from imgcls_cli.data.idx import load_idx_dataset

    tv_class, folder, classes, system = IDX_DATASETS[name]
    base = Path(root).expanduser() if root else DEFAULT_ROOT
    candidates = [base, base / folder / "raw", base / folder, *map(Path, system)]
    data = load_idx_dataset(candidates)
    if data is None and download:
        import torchvision

        try:
            getattr(torchvision.datasets, tv_class)(root=str(base), train=True, download=True)
            getattr(torchvision.datasets, tv_class)(root=str(base), train=False, download=True)
        except Exception as exc:  # no network, a proxy, a full disk: one line either way
            raise UserError(f"could not download {name} into {base}: {str(exc).splitlines()[0]}") from None
        data = load_idx_dataset(candidates)
    if data is None:
        where = ", ".join(str(c) for c in candidates)
        hint = " or `apt-get install dataset-fashion-mnist`" if name == "fashion_mnist" else ""
        raise UserError(f"{name} files (train-images-idx3-ubyte[.gz] and the three others) not found in: {where}. "
                        f"Set dataset.root=FOLDER, add dataset.download=true{hint}.")
    train_x, train_y = data["train"]
    test_x, test_y = data["test"]
    val, train = stratified_split(train_y, [val_fraction], seed)
    n = len(train_y)
    ids = [f"train/{i}" for i in range(n)] + [f"test/{i}" for i in range(len(test_y))]
    return Source(np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y]), classes, ids,
                  predefined={"train": train, "val": val, "test": np.arange(n, n + len(test_y))})


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
