"""Splitting a dataset: stratified, seeded splits, folds and subsets of label arrays; the splits that files name
or that a run's splits.csv recorded; and the one-line errors when a fraction leaves a split empty.

Labels are class indices (N,) or, for multi-label data, multi-hot rows (N, C): the public functions take either and
hand multi-hot rows to iterative stratification (Sechidis, Tsoumakas & Vlahavas 2011), which fills parts of exact
sizes label by label, rarest label first."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from imgcls_cli.errors import UserError

SPLITS = ("train", "val", "test")
SPLIT_WORDS = {"val": "validation", "test": "test"}


def stratified_split(labels: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
    """Split indices into len(fractions) + 1 parts: one per fraction, then the rest; each class split alike."""
    if labels.ndim == 2:
        sizes = [int(round(frac * len(labels))) for frac in fractions]
        return iterative_stratification(labels, [*sizes, max(0, len(labels) - sum(sizes))], seed)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        start = 0
        for i, frac in enumerate(fractions):
            take = int(round(frac * len(idx)))
            parts[i].append(idx[start : start + take])
            start += take
        parts[-1].append(idx[start:])
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


def stratified_subset(labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Indices of a stratified seeded subset of exactly n samples (all of them when n is None or too big)."""
    if n is None or n >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    if labels.ndim == 2:
        return iterative_stratification(labels, [n, len(labels) - n], seed)[0]
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * (n / len(labels))
    take = np.floor(quota).astype(int)
    # Largest remainders get the samples that rounding down left over.
    for i in np.argsort(-(quota - take), kind="stable")[: n - take.sum()]:
        take[i] += 1
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(keep)).astype(np.int64)


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """k disjoint folds covering every index; each class is dealt round-robin, so fold sizes differ by at most 1
    per class (multi-hot rows: fold sizes differ by at most 1)."""
    if labels.ndim == 2:
        return iterative_stratification(labels, [len(labels) // k + (i < len(labels) % k) for i in range(k)], seed)
    rng = np.random.default_rng(seed)
    folds: list[list[np.ndarray]] = [[] for _ in range(k)]
    offset = 0  # where the next class starts dealing, so the remainders spread over the folds
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        for i in range(k):
            folds[(i + offset) % k].append(idx[i::k])
        offset += len(idx) % k
    return [np.sort(np.concatenate(f)).astype(np.int64) for f in folds]


def split_indices(labels: np.ndarray, val_fraction: float, test_fraction: float,
                  seed: int) -> dict[str, np.ndarray]:
    """train/val/test carved by the fractions (stratified, seeded)."""
    if val_fraction + test_fraction >= 1.0:
        raise UserError("dataset.val_fraction + dataset.test_fraction must leave some data to train on (sum < 1).")
    val, test, train = stratified_split(labels, [val_fraction, test_fraction], seed)
    check_carved(labels, {"val": (val_fraction, val), "test": (test_fraction, test)})
    return {"train": train, "val": val, "test": test}


def check_carved(labels: np.ndarray, carved: dict[str, tuple[float, np.ndarray]]) -> None:
    """A split carved with a fraction > 0 that came out empty: the classes are too small for the fraction (it is
    taken per class, rounded), which is the cause to give, not the fraction."""
    for split, (fraction, part) in carved.items():
        if fraction <= 0 or len(part):
            continue
        if labels.ndim == 2:  # multi-hot rows: the fraction is taken of all images, not per class
            need = math.ceil(100 / max(2 * len(labels), 1)) / 100
            raise UserError(
                f"dataset.{split}_fraction={fraction} leaves no {SPLIT_WORDS[split]} image: {fraction} of the "
                f"{len(labels)} image(s) rounds to 0; raise dataset.{split}_fraction to {need} or more, add images, "
                f"or set dataset.{split}_fraction=0 to go without a {SPLIT_WORDS[split]} split.")
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


def fold_indices(indices: dict[str, np.ndarray], labels: np.ndarray, folds: int, fold: int,
                  seed: int, classes: list[str] | None = None) -> dict[str, np.ndarray]:
    """k-fold cross-validation over train + val (stratified, seeded): fold `fold` validates, the rest train.
    Every fold must see every class: folds may not exceed the images of the smallest class."""
    pool = np.sort(np.concatenate([indices["train"], indices["val"]]))
    present, counts = class_counts(labels[pool])
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


def class_counts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the classes that have images, how many each): of class indices, or of multi-hot rows (images per label)."""
    if labels.ndim == 2:
        counts = np.asarray(labels).sum(axis=0).astype(np.int64)
        return np.flatnonzero(counts), counts[counts > 0]
    return np.unique(labels, return_counts=True)


def iterative_stratification(labels: np.ndarray, sizes: list[int], seed: int) -> list[np.ndarray]:
    """Multi-hot rows (N, C) split into len(sizes) parts of exactly those sizes (they sum to N), sorted indices.

    Sechidis, Tsoumakas & Vlahavas (2011), "On the stratification of multi-label data": each part wants its
    share (size / N) of every label's images; the label with the fewest images left is dealt first, each of its
    images to the part that still wants that label most (ties: the part with most room, then a seeded draw).
    A part that is full takes no more, so the sizes are exact. With exact sizes the label dealt last would only
    fill the room left (as unevenly as a random split), so the absence of each label is dealt as a label too.
    Images with no label get their share of each part first (largest remainders) and fill it last.
    """
    y = np.asarray(labels) != 0
    n, k = len(y), len(sizes)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)  # images are visited in a seeded order
    labeled = y[order].any(axis=1, keepdims=True)
    y = np.concatenate([y[order], ~y[order] & labeled], axis=1)  # each label, then its absence (labeled images)
    unlabeled = _shares(sizes, int((~labeled).sum()))
    room = [int(s) - u for s, u in zip(sizes, unlabeled)]
    want = np.asarray(sizes, dtype=np.float64)[:, None] / max(n, 1) * y.sum(axis=0)[None, :]
    left = y.sum(axis=0).astype(np.int64)
    tiebreak = rng.permutation(y.shape[1])  # among labels with as few images left
    part = np.full(n, -1, dtype=np.int64)
    while left.any():
        label = min(np.flatnonzero(left), key=lambda c: (left[c], tiebreak[c]))
        for i in np.flatnonzero(y[:, label] & (part < 0)).tolist():
            wants = want[:, label].tolist()
            open_parts = [j for j in range(k) if room[j] > 0]
            best = max((wants[j], room[j]) for j in open_parts)
            tied = [j for j in open_parts if (wants[j], room[j]) == best]
            j = tied[int(rng.integers(len(tied)))] if len(tied) > 1 else tied[0]
            part[i] = j
            room[j] -= 1
            want[j] -= y[i]
            left -= y[i]
    part[part < 0] = np.repeat(np.arange(k), [r + u for r, u in zip(room, unlabeled)])[: int((part < 0).sum())]
    return [np.sort(order[part == j]).astype(np.int64) for j in range(k)]


def _shares(sizes: list[int], count: int) -> list[int]:
    """count split in proportion to sizes, in whole numbers that sum to count (largest remainders first)."""
    quota = np.asarray(sizes, dtype=np.float64) * (count / max(sum(sizes), 1))
    take = np.floor(quota).astype(np.int64)
    take[np.argsort(-(quota - take), kind="stable")[: count - int(take.sum())]] += 1
    return take.tolist()


def named_splits(names: np.ndarray, labels: np.ndarray, seed: int, val_fraction: float,
                  test_fraction: float) -> dict[str, np.ndarray]:
    """The splits the files name; a split that no file names is carved from train (stratified, seeded)."""
    predefined = {s: np.flatnonzero(names == s) for s in SPLITS}
    if len(predefined["train"]) == 0:
        raise UserError("no readable training images (none in train/ or in rows with split=train).")
    carve = [(s, f) for s, f in (("val", val_fraction), ("test", test_fraction)) if len(predefined[s]) == 0]
    parts = stratified_split(labels[predefined["train"]], [f for _, f in carve], seed)
    check_carved(labels[predefined["train"]], {s: (f, part) for (s, f), part in zip(carve, parts)})
    for (split, _), part in zip(carve, parts):
        predefined[split] = predefined["train"][part]
    predefined["train"] = predefined["train"][parts[-1]]
    return predefined


def indices_from_file(path: Path, ids: list[str]) -> dict[str, np.ndarray]:
    """The splits a training run wrote (splits.csv): the same images in the same splits, whatever was added since."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))[1:]
    except OSError as exc:
        raise UserError(f"cannot read the splits file {path}: {exc.strerror or exc}") from None
    from imgcls_cli.rundir import unescape_cell  # ids a spreadsheet would take for formulas are written quoted

    where = {unescape_cell(row[0]): row[1] for row in rows if len(row) >= 2}
    known = [(i, where.get(sample_id)) for i, sample_id in enumerate(ids)]
    return {s: np.array([i for i, split in known if split == s], dtype=np.int64) for s in SPLITS}
