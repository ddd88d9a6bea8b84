"""Exact duplicates (the same decoded pixels: equal digests) and near duplicates (the same picture resized,
re-encoded, slightly cropped or brightened).

Near duplicates are pairs whose 64-bit perceptual hashes differ in at most `near_distance` bits, each confirmed by
the correlation of the two images' gray thumbnails. The pairs are found without comparing every hash with every
other (multi-index hashing): cut into four 16-bit bands, two hashes within d bits agree to within d // 4 bits on
at least one band (pigeonhole), so each hash looks up, in each band's sorted values, the values within d // 4
bits of its own, and only those candidates are compared whole. An image is also hashed with a thin border cut
off, and that hash looked up among the others' whole-image hashes: a cropped copy then matches too."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

BANDS, BAND_BITS = 4, 16
QUERIES = 4096  # hashes looked up at a time (bounds the candidates held in memory)


@dataclass(frozen=True)
class Pair:
    """Two images that are the same picture: first < second (positions in the listing); similarity: the
    thumbnails' correlation."""

    first: int
    second: int
    similarity: float


def exact_groups(digests: list[str], readable: np.ndarray) -> list[list[int]]:
    """Positions of the images with equal decoded pixels, each group in listing order (groups of 2 or more)."""
    groups: dict[str, list[int]] = {}
    for i in np.flatnonzero(readable):
        groups.setdefault(digests[i], []).append(int(i))
    return [g for g in groups.values() if len(g) > 1]


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], np.uint8)
    return table[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1)


def _masks(radius: int) -> np.ndarray:
    """Every 16-bit value with at most `radius` bits set (the flips a band may differ by)."""
    masks = [0]
    for r in range(1, radius + 1):
        masks += [sum(1 << b for b in bits) for bits in combinations(range(BAND_BITS), r)]
    return np.array(masks, dtype=np.uint64)


class HashIndex:
    """The whole-image hashes, one sorted copy of each band, for lookups of the hashes within `distance` bits."""

    def __init__(self, hashes: np.ndarray, distance: int) -> None:
        self.hashes, self.distance = hashes, distance
        self.masks = _masks(distance // BANDS)
        self.bands = []
        for b in range(BANDS):
            keys = (hashes >> np.uint64(b * BAND_BITS)) & np.uint64(0xFFFF)
            order = np.argsort(keys, kind="stable")
            self.bands.append((keys[order], order))

    def pairs(self, queries: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
        """(q, j): query q (numbered from offset) and a hash j within `distance` bits of it, each pair once."""
        found = []
        for b, (keys, order) in enumerate(self.bands):
            wanted = ((queries >> np.uint64(b * BAND_BITS)) & np.uint64(0xFFFF))[:, None] ^ self.masks[None, :]
            lo = np.searchsorted(keys, wanted.ravel(), "left")
            counts = np.searchsorted(keys, wanted.ravel(), "right") - lo
            q = np.repeat(np.repeat(np.arange(len(queries)), len(self.masks)), counts)
            starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
            j = order[starts + np.arange(counts.sum())]
            close = popcount(queries[q] ^ self.hashes[j]) <= self.distance
            found.append((q[close] + offset) * len(self.hashes) + j[close])
        both = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
        return both // len(self.hashes), both % len(self.hashes)


def near_pairs(hashes: np.ndarray, thumbs: np.ndarray, readable: np.ndarray, digests: list[str], distance: int,
               similarity: float) -> list[Pair]:
    """Near-duplicate pairs among the readable images that are not exact duplicates of each other."""
    positions = np.flatnonzero(readable)
    h, t = hashes[positions], thumbs[positions]
    index = HashIndex(np.ascontiguousarray(h[:, 0]), distance)
    best: dict[tuple[int, int], float] = {}
    for view in (0, 1):  # the whole image, then with its border cut off, against the whole images
        for start in range(0, len(h), QUERIES):
            i, j = index.pairs(np.ascontiguousarray(h[start:start + QUERIES, view]), start)
            keep = j > i if view == 0 else j != i
            i, j = i[keep], j[keep]
            corr = np.einsum("nk,nk->n", t[i, view].astype(np.float32), t[j, 0].astype(np.float32))
            for a, b, c in zip(i[corr >= similarity], j[corr >= similarity], corr[corr >= similarity]):
                key = (int(positions[min(a, b)]), int(positions[max(a, b)]))
                best[key] = max(best.get(key, -1.0), float(c))
    return [Pair(a, b, round(min(c, 1.0), 4)) for (a, b), c in sorted(best.items()) if digests[a] != digests[b]]
