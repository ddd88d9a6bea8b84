"""The images an export is checked and calibrated on: the checkpoint's own dataset, loaded as `imgcls eval` loads it
(its training settings and splits), VERIFY_IMAGES of its test split and N of its training split, normalized as the
model takes them (InputSpec.normalize)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from imgcls_cli.data.datasets import Split, load_dataset
from imgcls_cli.data.inputs import InputSpec
from imgcls_cli.engine.eval_data import class_mapping
from imgcls_cli.engine.inference import dataset_for_checkpoint, remap
from imgcls_cli.errors import UserError

VERIFY_IMAGES = 256
VERIFY_SPLITS = ("test", "val", "train")  # the first that holds images (a run may have trained without a test split)


@dataclass(frozen=True)
class Images:
    """Normalized float32 images (N, C, H, W) and their labels as the checkpoint's class indices."""

    images: torch.Tensor
    labels: np.ndarray
    split: str
    dataset: str

    def numpy(self) -> np.ndarray:
        return np.ascontiguousarray(self.images.numpy(), dtype=np.float32)


def load_images(ckpt: dict[str, Any], checkpoint: str, calibration: int) -> tuple[Images, Images | None]:
    """(VERIFY_IMAGES images spread over the test split, `calibration` seeded-random training images or None)."""
    seed = int(ckpt["config"].get("seed", 0))
    bundle = load_dataset(dataset_for_checkpoint(ckpt, None, [], checkpoint), seed,
                          task=ckpt.get("task") or "multiclass")
    mapping = class_mapping(bundle.classes, [str(c) for c in ckpt["classes"]], bundle.name, checkpoint)
    spec = InputSpec.from_checkpoint(ckpt)
    split = next((s for s in VERIFY_SPLITS if len(bundle.splits[s])), None)
    if split is None:
        raise UserError(f"dataset '{bundle.name}' of {checkpoint} holds no image to verify the export on.")
    data = bundle.splits[split]
    spread = np.unique(np.linspace(0, len(data) - 1, min(VERIFY_IMAGES, len(data))).round().astype(np.int64))
    verify = _take(data, spread, spec, mapping, split, bundle.name)
    if not calibration:
        return verify, None
    train = bundle.splits["train"]
    order = np.random.default_rng(seed).permutation(len(train))[:calibration]
    return verify, _take(train, np.sort(order), spec, mapping, "train", bundle.name)


def _take(data: Split, positions: np.ndarray, spec: InputSpec, mapping: np.ndarray | None, split: str,
          dataset: str) -> Images:
    """The images at positions (those that decode, for files), normalized, with their labels."""
    if data.in_memory:
        pixels, ok = data.images[torch.from_numpy(positions)], np.ones(len(positions), bool)
    else:
        array, ok = data.images.load(positions)
        pixels = torch.from_numpy(array[ok])
    if not ok.any():
        raise UserError(f"none of the {len(positions)} {split} images of dataset '{dataset}' chosen to check the "
                        "export could be read.")
    labels = data.labels[torch.from_numpy(positions[ok])]
    if mapping is not None:
        labels = remap(labels, torch.from_numpy(mapping))
    multilabel = labels.ndim == 2  # multi-hot labels stay float
    return Images(spec.normalize(pixels).contiguous(), labels.numpy().astype(np.float32 if multilabel else np.int64),
                  split, dataset)
