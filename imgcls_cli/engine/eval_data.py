"""Which images `imgcls eval` scores, under which labels, and what it could not score.

- Classes are matched by name: the dataset's labels are renumbered to the checkpoint's class indices (a
  reordered class folder scores the same); a dataset with other classes is refused.
- An eval whose split is not the training run's own never scores an image the checkpoint trained on (nor, for
  split=test, one it was validated on): those are found in the run's splits.csv and left out, and counted.
  Where the run's splits cannot be known, and the images could be the run's, eval refuses.
- Where eval scores the run's own split (its splits.csv), the images of that split that are gone or no longer
  decode are counted and listed.
"""
from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from imgcls_cli.errors import UserError
from imgcls_cli.rundir import unescape_cell

log = logging.getLogger("imgcls")

# What a checkpoint has learned from, per evaluated split: its weights (train) and its choice of epoch (val).
SEEN = {"val": ("train",), "test": ("train", "val")}
# Datasets made of another dataset's images, transformed, with its ids and splits: the same images to a model.
SAME_IMAGES = {"digits_inverted": "digits", "fashion_mnist_rotated": "fashion_mnist",
               "fashion_mnist_noisy": "fashion_mnist"}
# Dataset keys that change neither which images a dataset has nor how it is split.
NOT_SPLITTING = {"image_size", "channels", "max_train_samples", "max_eval_samples", "in_memory", "memory_budget_gb",
                 "cache", "cache_dir", "mean", "std", "class_weights", "sampler", "on_bad_file", "download",
                 "splits_file", "angle", "noise_std"}
# Keys that only say where the files of a built-in dataset are (the same images wherever they are).
LOCATION = {"root", "download"}
ID_COLUMNS = ("index", "path")
MISSING = "missing: in the training run's splits.csv, not found now"


def family(name: Any) -> str:
    return SAME_IMAGES.get(str(name), str(name))


def few(names: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(map(str, names[:n]))
    return shown + (f" (+{len(names) - n} more)" if len(names) > n else "")


def class_mapping(dataset_classes: Sequence[str], classes: Sequence[str], dataset: str,
                  checkpoint: str) -> np.ndarray | None:
    """dataset label -> the checkpoint's index of the same class name (None: the same order already), or a
    one-line error naming classes that differ."""
    ours, theirs = [str(c) for c in classes], [str(c) for c in dataset_classes]
    if ours == theirs:
        return None
    lacking, extra = [c for c in ours if c not in theirs], [c for c in theirs if c not in ours]
    if lacking or extra or len(set(ours)) != len(ours) or len(set(theirs)) != len(theirs):
        parts = []
        if lacking:
            parts.append(f"the checkpoint's {few(lacking)} not in the dataset")
        if extra:
            parts.append(f"the dataset's {few(extra)} not in the checkpoint")
        what = "; ".join(parts) or "a class name repeats"
        raise UserError(f"dataset '{dataset}' has other classes than {checkpoint} was trained on ({what}); "
                        "evaluate it on data with the same class names (in any order).")
    index = {c: i for i, c in enumerate(ours)}
    return np.array([index[c] for c in theirs], dtype=np.int64)


# ------------------------------------------------------------------------------------------ the run's splits
@dataclass
class RunSplits:
    """A training run's splits.csv: which split each of its images went to."""

    path: Path
    id_column: str
    split_of: dict[str, str]
    base: Path | None = None  # the folder path ids are relative to, absolute (where the run used paths)
    _keys: dict[str, str] = field(default_factory=dict, repr=False)

    def ids(self, *splits: str) -> list[str]:
        return [i for i, s in self.split_of.items() if s in splits]

    def key(self, sample_id: str) -> str:
        """What identifies an image across datasets: the real path of a file, else the id."""
        if self.id_column != "path" or self.base is None:
            return sample_id
        if sample_id not in self._keys:
            self._keys[sample_id] = os.path.realpath(self.base / sample_id)
        return self._keys[sample_id]


def splits_beside(checkpoint: str | Path) -> Path:
    """<run>/splits.csv for <run>/checkpoints/<name>.pt."""
    return Path(checkpoint).resolve().parent.parent / "splits.csv"


def run_checkpoint(checkpoint: str | Path, ckpt: dict[str, Any]) -> str | Path:
    """The checkpoint whose training run's splits.csv tells what `checkpoint` learned from: for an exported model
    (.onnx, .pt2), the checkpoint it was exported from (its metadata's source), else the checkpoint itself."""
    return ckpt.get("source") or checkpoint


def file_base(cfg: dict[str, Any], cwd: Path | None = None) -> Path | None:
    """The folder a file dataset's path ids are relative to (dataset.file's folder, or dataset.root), absolute."""
    if cfg.get("file"):
        base = Path(str(cfg["file"])).expanduser().parent
    elif cfg.get("root"):
        base = Path(str(cfg["root"])).expanduser()
    else:
        return None
    return base if base.is_absolute() else (cwd or Path.cwd()) / base


def recorded_cwd(run_dir: Path) -> Path | None:
    """The folder a run was started in (Hydra records it), where its relative paths were relative to."""
    hydra_yaml = run_dir / ".hydra" / "hydra.yaml"
    if not hydra_yaml.is_file():
        return None
    import yaml

    try:
        cwd = ((yaml.safe_load(hydra_yaml.read_text(encoding="utf-8")) or {}).get("hydra") or {}) \
            .get("runtime", {}).get("cwd")
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):
        return None
    return Path(cwd) if isinstance(cwd, str) and cwd else None


def _read_splits(path: Path, header_only: bool = False) -> list[list[str]]:
    """The rows of a run's splits.csv (its header first), or a one-line error where it is not one."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            rows = [next(reader, [])] if header_only else list(reader)
        rows = [[unescape_cell(cell) for cell in row] for row in rows]  # ids as the run gave them (write_csv quotes)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read the training run's splits file {path}: {exc}") from None
    header = [h.strip() for h in rows[0]] if rows else []
    if len(header) < 2 or header[0] not in ID_COLUMNS or header[1] != "split":
        raise UserError(f"{path} is not a training run's splits file (its header is {','.join(header) or 'empty'}, "
                        "not index,split or path,split); restore it, or move the checkpoint out of that folder.")
    return rows


def check_splits_file(path: Path) -> None:
    """A one-line error where the splits.csv beside a checkpoint is not a run's splits file."""
    _read_splits(path, header_only=True)


def read_run_splits(checkpoint: str | Path, trained_cfg: dict[str, Any]) -> RunSplits | None:
    """The splits.csv of the checkpoint's training run, or None where there is none."""
    path = splits_beside(checkpoint)
    if not path.is_file():
        return None
    rows = _read_splits(path)
    header = [h.strip() for h in rows[0]]
    split_of = {row[0]: row[1] for row in rows[1:] if len(row) >= 2}
    base = file_base(trained_cfg, recorded_cwd(path.parent)) if header[0] == "path" else None
    return RunSplits(path, header[0], split_of, base)


# ------------------------------------------------------------------------------------------ unseen images
def _split_settings(cfg: dict[str, Any], seed: Any, path_ids: bool) -> dict[str, Any]:
    ignore = NOT_SPLITTING | (set() if path_ids else LOCATION) | {"name", "split_seed"}
    settings = {k: v for k, v in cfg.items() if k not in ignore and v is not None}
    split_seed = cfg.get("split_seed")
    settings["<seed>"] = seed if split_seed is None else split_seed
    settings["<family>"] = family(cfg.get("name"))
    return settings


def _disjoint(a: Path, b: Path) -> bool:
    a, b = Path(os.path.realpath(a)), Path(os.path.realpath(b))
    return a != b and a not in b.parents and b not in a.parents


def seen_keys(checkpoint: str, ckpt: dict[str, Any], ds_cfg: dict[str, Any], eval_seed: int, split: str,
              id_column: str) -> tuple[RunSplits | None, set[str]]:
    """(the run's splits, the keys of the images the checkpoint learned from that an eval of ds_cfg's `split`
    could hold): empty where the eval's split is the run's own, or the eval's images cannot be the run's.
    A one-line error where the run's splits are unknown and the images could be the run's."""
    trained = ckpt["config"].get("dataset") or {}
    run = read_run_splits(run_checkpoint(checkpoint, ckpt), trained)
    if split not in SEEN:
        return run, set()  # split=train: the images the model learned from, as asked
    used = ds_cfg.get("splits_file")
    if run is not None:
        if used and Path(str(used)).resolve() == run.path:
            return run, set()  # the run's own split
        if run.id_column != id_column or (id_column == "index" and family(ds_cfg.get("name")) != family(
                trained.get("name"))):
            return run, set()  # other images: indices of another dataset, or paths against indices
        return run, {run.key(i) for i in run.ids(*SEEN[split])}
    path_ids = id_column == "path"
    if family(ds_cfg.get("name")) != family(trained.get("name")) and (not path_ids or file_base(trained) is None):
        return None, set()  # another dataset's images: indices of another dataset, or files the run did not read
    seed = ckpt["config"].get("seed", 0)
    if _split_settings(ds_cfg, eval_seed, path_ids) == _split_settings(trained, seed, path_ids):
        return None, set()  # the run's split, made again from its own settings (seed, fractions, folds)
    ours, theirs = file_base(ds_cfg), file_base(trained)
    if path_ids and ours is not None and theirs is not None and Path(str(trained.get("file") or trained.get(
            "root"))).expanduser().is_absolute() and _disjoint(ours, theirs):
        return None, set()  # files in another folder than the run's
    raise UserError(f"cannot tell which images {checkpoint} was trained on: its run's splits.csv "
                    f"({splits_beside(run_checkpoint(checkpoint, ckpt))}) is missing and this eval splits the data "
                    "differently; evaluate on the run's own split (without dataset.* keys that change it), or restore "
                    "the run's splits.csv.")


def eval_keys(ids: Sequence[str], id_column: str, ds_cfg: dict[str, Any]) -> list[str]:
    """The keys of the eval's images, comparable to RunSplits.key."""
    base = file_base(ds_cfg) if id_column == "path" else None
    if base is None:
        return list(ids)
    return [os.path.realpath(base / i) for i in ids]


@dataclass
class Unread:
    """The images of the run's split that eval could not score."""

    total: int  # images of the run's split
    entries: list[tuple[str, str]]  # (path or id, reason)


def unread_of_run_split(run: RunSplits, split: str, present: set[str], skipped: Sequence[tuple[str, str]],
                        ds_cfg: dict[str, Any]) -> Unread:
    """The run's `split` images that are not among `present` (the ids loaded): each with the reason it was
    skipped (decode errors), else 'missing'."""
    wanted = run.ids(split)
    gone = [i for i in wanted if i not in present]
    base = file_base(ds_cfg) if run.id_column == "path" else None
    reasons: dict[str, str] = {}
    if base is not None:
        for path, why in skipped:
            reasons[os.path.relpath(path, base).replace(os.sep, "/")] = why
    entries = [(str(base / i) if base is not None else i,
                reasons.get(i, MISSING)) for i in gone]
    return Unread(len(wanted), entries)
