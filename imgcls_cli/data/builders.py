"""Dataset builders, registered by name: each returns the raw images of one dataset as a Source (uint8 arrays, or
image files not decoded yet); load_dataset (datasets.py) places, splits and subsets them the same way for all."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgcls_cli.data.splits import stratified_split
from imgcls_cli.errors import UserError
from imgcls_cli.registry import Registry

DATASETS: Registry = Registry("dataset")
DEFAULT_ROOT = Path.home() / ".cache" / "imgcls" / "data"


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
              pattern: str = "textures", **_: Any) -> Source:
    """Generated stripe, ring and noise patterns (or a class-giving patch on noise): a dataset that needs no files."""
    from imgcls_cli.data.synthetic import PATTERNS

    generate = PATTERNS.get(pattern)
    names = generate.classes
    if not 2 <= num_classes <= len(names):
        raise UserError(f"dataset.num_classes must be between 2 and {len(names)} for synthetic, not {num_classes}.")
    if num_samples < 10 * num_classes:
        raise UserError(f"dataset.num_samples must be at least 10 per class ({10 * num_classes}), not {num_samples}.")
    images, labels = generate(num_samples, num_classes, image_size, channels, seed)
    return Source(images, labels, list(names[:num_classes]))


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
IDX_DATASETS = {
    # name: (torchvision class, folder under the root, class names, system folders searched too)
    "mnist": ("MNIST", "MNIST", [str(i) for i in range(10)], []),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST", FASHION_CLASSES, ["/usr/share/datasets/fashion-mnist"]),
}


def official_splits(data: dict[str, tuple[np.ndarray, np.ndarray]], classes: list[str], val_fraction: float,
                     seed: int) -> Source:
    """Official train and test sets; the val split is carved from train (stratified, seeded)."""
    train_x, train_y = data["train"]
    test_x, test_y = data["test"]
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


def idx_arrays(name: str, root: str | None, download: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train"|"test": (uint8 images (N, 1, 28, 28), int64 labels)} of an IDX dataset (mnist, fashion_mnist):
    found under the root or the system folders, else downloaded when asked, else one line saying where to put it."""
    from imgcls_cli.data.idx import load_idx_dataset

    tv_class, folder, _, system = IDX_DATASETS[name]
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
    return data


def _idx_source(name: str, root: str | None, download: bool, val_fraction: float, seed: int) -> Source:
    return official_splits(idx_arrays(name, root, download), IDX_DATASETS[name][2], val_fraction, seed)


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
    return official_splits(data, classes, val_fraction, seed)


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


def _class_indices(labels: list[str], classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[label] for label in labels], dtype=np.int64)


def _file_source(files: list[Path], y: np.ndarray, splits: list[str] | None, classes: list[str], base: Path,
                 on_bad_file: str) -> Source:
    """Image files and their labels (class indices, or multi-hot rows), not decoded yet: load_dataset decides where
    they live, then splits them."""
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
    return _file_source(files, _class_indices(labels, classes), splits, classes, base, on_bad_file)


@DATASETS.register("csv")
def csv_file(*, image_size: int, channels: int, seed: int, file: str | None = None, val_fraction: float = 0.1,
             test_fraction: float = 0.1, on_bad_file: str = "skip", task: str = "multiclass",
             label_columns: tuple[str, ...] | None = None, **_: Any) -> Source:
    """A CSV of path,label rows (paths relative to the CSV file), with an optional split column; or of path,labels
    rows (label sets joined by |, or one 0/1 column per label in dataset.label_columns) for task=multilabel."""
    from imgcls_cli.data.files import read_csv_table, read_label_csv, sorted_classes
    from imgcls_cli.data.multilabel import read_label_sets, wants_label_sets

    if not file:
        raise UserError("dataset=csv needs dataset.file=LABELS.csv (columns path,label and optionally split).")
    path = Path(file).expanduser()
    table = read_csv_table(path)
    if wants_label_sets(table[1], task, label_columns):
        files, y, classes, splits = read_label_sets(path, table, label_columns)
        return _file_source(files, y, splits, classes, path.parent, on_bad_file)
    files, labels, splits = read_label_csv(path, table)
    classes = sorted_classes(labels)
    return _file_source(files, _class_indices(labels, classes), splits, classes, path.parent, on_bad_file)
