"""The images a check looks at: every image of the dataset as `imgcls train` would read it (the same builder, the same
splits: the ones the data names, else carved by the fractions with the same seed), each with its id, label and split.
Images that cannot be read stay listed (they are findings); a dataset of arrays lists its images by index."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgcls_cli.check.images import Analysed, analyse
from imgcls_cli.data.builders import DATASETS, Source
from imgcls_cli.data.datasets import BUILD_CHANNELS, BUILD_SIZE, _check_classes
from imgcls_cli.data.splits import SPLITS, indices_from_file, named_splits, split_indices
from imgcls_cli.errors import UserError
from imgcls_cli.specs.check import CheckSpec


@dataclass
class Listing:
    """The dataset's images: ids (paths relative to the root / CSV, or indices), labels, splits ("" for an image
    that could not be read and that no folder or row put in a split), what each image is."""

    name: str
    classes: list[str]
    id_column: str  # path | index
    ids: list[str]
    labels: np.ndarray
    splits: np.ndarray  # str per image
    paths: list[Path] | None  # image files, or None for a dataset of arrays
    images: np.ndarray | None  # uint8 (N, C, H, W) of a dataset of arrays
    info: Analysed

    def __len__(self) -> int:
        return len(self.ids)

    def pixels(self, i: int) -> Any:
        """Item i as check reads it: its path, or its array."""
        return self.paths[i] if self.paths is not None else self.images[i]


def list_dataset(spec: CheckSpec) -> Listing:
    """Build the dataset spec.train names with its registered builder, analyse every image and assign the splits."""
    ds = spec.train.dataset
    builder = DATASETS.get(ds.name)
    source: Source = builder(image_size=ds.image_size or BUILD_SIZE, channels=ds.channels or BUILD_CHANNELS,
                             seed=spec.seed, val_fraction=ds.val_fraction, test_fraction=ds.test_fraction,
                             **ds.builder_options())
    _check_classes(ds.name, source.classes)
    items: list[Any] = list(source.paths) if source.paths is not None else list(source.images)
    info = analyse(items, spec.crop)
    ids = source.ids or [str(i) for i in range(len(items))]
    splits = _splits(spec, source, ids, info.readable)
    id_column = "path" if source.paths is not None else "index"
    return Listing(ds.name, list(source.classes), id_column, ids, source.labels.astype(np.int64), splits,
                   source.paths, None if source.paths is not None else source.images, info)


def _splits(spec: CheckSpec, source: Source, ids: list[str], readable: np.ndarray) -> np.ndarray:
    """The split of every image as training assigns them (after leaving out the images it cannot read)."""
    ds = spec.train.dataset
    out = np.full(len(ids), "", dtype=object)
    if source.split_names is not None:  # named by folders or a CSV column: kept for the unreadable ones too
        out[:] = [s or "" for s in source.split_names]
    keep = np.flatnonzero(readable)
    if not len(keep):
        raise UserError(f"none of the {len(ids)} images of dataset '{ds.name}' could be read (first: {ids[0]}).")
    labels = source.labels[keep]
    if ds.splits_file:
        indices = indices_from_file(Path(ds.splits_file), [ids[i] for i in keep])
    elif source.predefined is not None:
        return _predefined(source.predefined, len(ids))
    elif source.split_names is not None:
        names = np.array([source.split_names[i] or "" for i in keep])
        indices = named_splits(names, labels, spec.seed, ds.val_fraction, ds.test_fraction)
    else:
        indices = split_indices(labels, ds.val_fraction, ds.test_fraction, spec.seed)
    for split in SPLITS:
        out[keep[indices[split]]] = split
    return out


def _predefined(indices: dict[str, np.ndarray], n: int) -> np.ndarray:
    out = np.full(n, "", dtype=object)
    for split in SPLITS:
        out[indices[split]] = split
    return out
