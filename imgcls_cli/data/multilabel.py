"""Multi-label data (task=multilabel): label sets read from a CSV (a `labels` column of names joined by `|`, or
one 0/1 column per label), multi-hot label rows, and the checks that tell a user when data and task disagree.

Labels of a multi-label dataset are multi-hot rows (N, C): uint8 in a builder's Source, float32 0/1 in a Split.
An image with no label (an empty `labels` cell, or 0 in every label column) is a valid image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from imgcls_cli.errors import UserError
from imgcls_cli.tasks import TASKS

SEPARATOR = "|"
TRUE_WORDS, FALSE_WORDS = ("1", "true"), ("0", "false")


def label_tensor(labels: np.ndarray) -> torch.Tensor:
    """A split's labels as torch wants them: int64 class indices (N,), or float32 multi-hot rows (N, C)."""
    return torch.from_numpy(np.ascontiguousarray(labels.astype(np.float32 if labels.ndim == 2 else np.int64)))


def per_class(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Images per class: of class indices, or of multi-hot rows (images that carry each label)."""
    if labels.ndim == 2:
        return np.asarray(labels).sum(axis=0).astype(np.int64)
    return np.bincount(labels, minlength=num_classes)


def check_task(name: str, labels: np.ndarray, task: str) -> None:
    """One line when the task and the dataset's kind of labels disagree."""
    if task == "multilabel" and labels.ndim == 1:
        raise UserError(f"dataset '{name}' has one label per image; task=multilabel (a run's, or a multilabel "
                        "checkpoint's) needs label sets: dataset=csv with a labels column (or "
                        "dataset.label_columns=[...]) or dataset=fashion_mnist_mosaic.")
    if task == "multiclass" and labels.ndim == 2:
        raise UserError(f"dataset '{name}' is multi-label (label sets per image): train it with task=multilabel "
                        "(a multiclass checkpoint cannot be scored on it).")


def check_label_sets(name: str, splits: dict[str, tuple[np.ndarray, list[str]]], classes: list[str]) -> None:
    """The training split must carry labels, and every label of val and test must occur in it: a model cannot
    learn (nor a threshold be tuned for) a label it never saw. splits: {split: (multi-hot rows, ids)}."""
    train = np.asarray(splits["train"][0])
    if not train.any():
        raise UserError(f"no image of the training split of dataset '{name}' has a label: add label sets to the "
                        "training rows (or raise dataset.max_train_samples).")
    seen = train.any(axis=0)
    for split in ("val", "test"):
        labels, ids = splits[split]
        unseen = np.flatnonzero(np.asarray(labels).any(axis=0) & ~seen)
        if len(unseen):
            label = classes[int(unseen[0])]
            example = ids[int(np.flatnonzero(np.asarray(labels)[:, unseen[0]])[0])]
            more = f" (and {len(unseen) - 1} more label(s))" if len(unseen) > 1 else ""
            raise UserError(f"label '{label}' of the {split} split of dataset '{name}' (e.g. {example}){more} is in "
                            "no training image: add training images with it, or take it out of the "
                            f"{split} rows (or raise dataset.max_train_samples).")


def multi_hot(label_sets: list[list[str]], classes: list[str]) -> np.ndarray:
    """uint8 (N, C) rows: 1 where the image carries the class."""
    index = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(label_sets), len(classes)), np.uint8)
    for row, names in enumerate(label_sets):
        y[row, [index[n] for n in names]] = 1
    return y


def wants_label_sets(fieldnames: list[str], task: str, label_columns: tuple[str, ...] | None) -> bool:
    """Whether a label CSV is read as label sets: label columns are named, or its header has a labels column (or
    lacks a label column) and the task or the header says so."""
    header = {h.strip().lower() for h in fieldnames}
    if label_columns:
        return True
    if task == "multilabel":
        return "labels" in header or "label" not in header
    return "labels" in header and "label" not in header


def read_label_sets(path: Path, table: tuple[list[dict], list[str]], label_columns: tuple[str, ...] | None
                    ) -> tuple[list[Path], np.ndarray, list[str], list[str] | None]:
    """(files, uint8 multi-hot rows, classes, splits or None) of a CSV of label sets: a `labels` column of names
    joined by `|` (or dataset.label_columns: one 0/1 column per label); paths relative to the CSV file."""
    from imgcls_cli.data.files import csv_path, sorted_classes, unique_rows

    rows, fieldnames = table
    keys = {h.strip().lower(): h for h in fieldnames}
    if "path" not in keys:
        raise UserError(f"{path} must have a 'path' column; its header is {','.join(fieldnames)}.")
    label_sets = _from_columns(path, rows, fieldnames, label_columns) if label_columns else \
        _from_cells(path, rows, fieldnames, keys)
    files, splits = [], []
    for number, row in enumerate(rows, 1):
        file = (row[keys["path"]] or "").strip()
        if not file:
            raise UserError(f"{path}: row {number} has an empty path ({dict(row)}).")
        files.append(csv_path(path, file))
        splits.append((row.get(keys.get("split", "")) or "").strip().lower())
    # Two rows of one file with other label sets are a conflict: compared as their sorted names joined.
    joined = [SEPARATOR.join(sorted(s)) for s in label_sets]
    keep, splits = unique_rows(path, files, joined, splits if "split" in keys else None)
    label_sets = [label_sets[i] for i in keep]
    classes = sorted_classes(list(label_columns)) if label_columns else \
        sorted_classes([n for s in label_sets for n in s])
    return [files[i] for i in keep], multi_hot(label_sets, classes), classes, splits


def _unnamed(fieldnames: list[str]) -> int | None:
    """The 1-based position of the first header column without a name, if any."""
    return next((i for i, h in enumerate(fieldnames, 1) if not h.strip()), None)


def _from_cells(path: Path, rows: list[dict], fieldnames: list[str], keys: dict[str, str]) -> list[list[str]]:
    """The label sets of a `labels` column: names joined by `|`, spaces stripped; an empty cell is no label."""
    if "labels" not in keys:
        if (column := _unnamed(fieldnames)) is not None:
            raise UserError(f"{path}: column {column} of the header has no name; name the column of label sets "
                            "'labels' (names joined by |), or name the 0/1 columns in dataset.label_columns.")
        raise UserError(f"{path} needs a 'labels' column (label names joined by |, empty for none) or "
                        f"dataset.label_columns=[...] naming its 0/1 columns; its header is {','.join(fieldnames)}.")
    column = keys["labels"]
    return [sorted({name.strip() for name in (row[column] or "").split(SEPARATOR) if name.strip()}) for row in rows]


def _from_columns(path: Path, rows: list[dict], fieldnames: list[str],
                  label_columns: tuple[str, ...]) -> list[list[str]]:
    """The label sets of one 0/1 (or true/false) column per label."""
    if (unnamed := _unnamed(fieldnames)) is not None:
        raise UserError(f"{path}: column {unnamed} of the header has no name; label columns are read by name, so "
                        "name every column.")
    header = {h.strip(): h for h in fieldnames}
    if missing := [c for c in label_columns if c not in header]:
        raise UserError(f"dataset.label_columns names {', '.join(map(repr, missing))}, which {path} lacks; its "
                        f"header is {','.join(h.strip() for h in fieldnames)}.")
    sets = []
    for number, row in enumerate(rows, 1):
        names = []
        for name in label_columns:
            value = (row[header[name]] or "").strip().lower()
            if value not in TRUE_WORDS + FALSE_WORDS:
                raise UserError(f"{path}: row {number}, column '{name}' holds {value!r}; a label column holds 1 or "
                                "0 (true or false) in every row.")
            if value in TRUE_WORDS:
                names.append(name)
        sets.append(names)
    return sets
