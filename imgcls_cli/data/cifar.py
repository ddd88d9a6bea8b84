"""CIFAR-10 and CIFAR-100 in their "python version" batches, read without running any pickled code."""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from imgcls_cli.errors import UserError

# name: (folder in the archive, train files, test files, meta file, label key, class-names key)
LAYOUTS = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta",
                "labels", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_labels", "fine_label_names"),
}
# What a CIFAR batch may name: numpy's array reconstruction and nothing else.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def read_batch(path: Path) -> dict[str, Any]:
    """One pickled CIFAR batch as a dict with str keys; any other pickled object is refused."""
    try:
        with open(path, "rb") as f:
            data = _DataOnlyUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"{path} is not a readable CIFAR batch ({exc}).") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a CIFAR batch (it holds no dict).")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in data.items()}


def find_folder(name: str, candidates: list[Path]) -> Path | None:
    """The first candidate (or its archive sub-folder) that holds every batch file of `name`."""
    folder, train, test, meta, *_ = LAYOUTS[name]
    for base in candidates:
        for where in (base / folder, base):
            if all((where / f).is_file() for f in [*train, *test, meta]):
                return where
    return None


def load_cifar(name: str, folder: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """{"train"|"test": (uint8 images (N, 3, 32, 32), int64 labels)} and the class names."""
    _, train, test, meta, label_key, names_key = LAYOUTS[name]
    out = {}
    for split, files in (("train", train), ("test", test)):
        images, labels = [], []
        for file in files:
            batch = read_batch(folder / file)
            data, target = batch.get("data"), batch.get(label_key)
            if not isinstance(data, np.ndarray) or target is None or len(data) != len(target) \
                    or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise UserError(f"{folder / file} does not hold CIFAR images ('data' of N x 3072) and "
                                f"'{label_key}'.")
            images.append(data.astype(np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(target, dtype=np.int64))
        out[split] = (np.concatenate(images), np.concatenate(labels))
    names = read_batch(folder / meta).get(names_key)
    if not isinstance(names, list) or not names:
        raise UserError(f"{folder / meta} holds no '{names_key}' class names.")
    return out, [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
