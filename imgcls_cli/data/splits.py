"""Stratified, seeded splits and subsets of label arrays."""
from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
    """Split indices into len(fractions) + 1 parts: one per fraction, then the rest; each class split alike."""
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
    per class."""
    rng = np.random.default_rng(seed)
    folds: list[list[np.ndarray]] = [[] for _ in range(k)]
    offset = 0  # where the next class starts dealing, so the remainders spread over the folds
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        for i in range(k):
            folds[(i + offset) % k].append(idx[i::k])
        offset += len(idx) % k
    return [np.sort(np.concatenate(f)).astype(np.int64) for f in folds]
