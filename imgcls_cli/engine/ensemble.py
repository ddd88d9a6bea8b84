"""Checkpoints scored on the same images: who may join an ensemble, the images any member learned from left out,
and the members' probabilities combined (averaging or voting)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imgcls_cli.engine.eval_data import SEEN, Unread, few
from imgcls_cli.errors import UserError
from imgcls_cli.specs.eval import ENSEMBLES

log = logging.getLogger("imgcls")


@dataclass
class Scored:
    """One checkpoint's probabilities on a split, with what is needed to report them."""

    checkpoint: str
    ckpt: dict[str, Any]
    probs: np.ndarray  # columns in the order of the classes (an ensemble's: its first member's)
    targets: np.ndarray
    ids: list[str]
    id_column: str
    dataset: str
    images: np.ndarray | None = None  # uint8 (N, C, H, W) when the split is in memory: for misclassified.png
    features: np.ndarray | None = None  # (N, D) float32 embeddings, with features=true
    keys: list[str] | None = None  # what identifies each scored image across datasets (eval_data.eval_keys)
    seen: set[str] = field(default_factory=set)  # keys of the images this checkpoint learned from
    seen_from: str = ""  # the splits.csv that says so
    unread: Unread | None = None  # where the run's own split is scored: its images that could not be
    name: str = ""
    split: str = ""
    dataset_config: dict[str, Any] = field(default_factory=dict)  # the dataset as scored (run_info.json records it)
    store: Any = None  # the split's data.Store when it streams (images is then None): pixels() reads it
    store_rows: np.ndarray | None = None  # the store position of each row

    def keep(self, mask: np.ndarray) -> None:
        """Only the rows where mask is true."""
        self.probs, self.targets = self.probs[mask], self.targets[mask]
        self.ids = [i for i, m in zip(self.ids, mask) if m]
        self.keys = [k for k, m in zip(self.keys or [], mask) if m]
        self.images = self.images[mask] if self.images is not None else None
        self.store_rows = self.store_rows[mask] if self.store_rows is not None else None
        self.features = self.features[mask] if self.features is not None else None
        self.dataset = f"{self.name} ({self.split}, {len(self.probs)} images)"

    def pixels(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (len(rows), C, H, W) images of these rows, at the checkpoint's input, and whether each was read
        (a streamed file may have become unreadable since it was scored)."""
        if self.images is not None:
            return np.asarray(self.images)[rows], np.ones(len(rows), bool)
        if self.store is None or self.store_rows is None:
            raise ValueError("no images kept for these rows")
        return self.store.load(self.store_rows[rows])


def check_member(checkpoint: str, ckpt: dict[str, Any], first: Scored) -> None:
    """A one-line error unless the checkpoint has the first member's classes (in any order) and input."""
    classes, ref_classes = [str(c) for c in ckpt["classes"]], [str(c) for c in first.ckpt["classes"]]
    if set(classes) != set(ref_classes):
        parts = [f"{path} has {few([c for c in have if c not in other])}" for path, have, other in
                 ((checkpoint, classes, ref_classes), (first.checkpoint, ref_classes, classes))
                 if set(have) - set(other)]
        raise UserError(f"ensemble members differ in classes ({' and '.join(parts)} that the other has not); "
                        "ensemble checkpoints trained on the same classes (in any order) and input.")
    tasks = [c.get("task") or "multiclass" for c in (ckpt, first.ckpt)]
    if tasks[0] != tasks[1]:
        raise UserError(f"ensemble members differ in task: {checkpoint} is {tasks[0]}, {first.checkpoint} is "
                        f"{tasks[1]}; an ensemble's members share one task.")
    of = lambda c: [c["input"]["channels"], c["input"]["size"]]  # noqa: E731
    if of(ckpt) != of(first.ckpt):
        raise UserError(f"ensemble members differ in input channels and size: {checkpoint} has {of(ckpt)}, "
                        f"{first.checkpoint} has {of(first.ckpt)}; ensemble checkpoints trained on the same "
                        "classes and input.")


def combine(members: list[Scored], method: str) -> np.ndarray:
    """averaging: the mean softmax. voting: each member's top class is a vote; the output is the vote share,
    a tie going to the class with the highest mean probability."""
    if method not in ENSEMBLES:
        raise UserError(f"ensemble must be averaging or voting, not '{method}'.")
    mean = np.mean([m.probs for m in members], axis=0)
    if method == "averaging":
        return mean
    if members[0].ckpt.get("task") == "multilabel":
        raise UserError("ensemble=voting picks one class an image; a multilabel ensemble averages its members' "
                        "sigmoid probabilities (ensemble=averaging).")
    k = mean.shape[1]
    votes = np.mean([np.eye(k)[m.probs.argmax(1)] for m in members], axis=0)
    winner = np.argmax(votes + 1e-6 * mean, axis=1)  # mean probabilities only ever decide between tied votes
    share = votes.copy()
    share[np.arange(len(share)), winner] += 1e-9  # so the reported label is the tie-break's
    return share / share.sum(1, keepdims=True)


def leave_out_seen(members: list[Scored], split: str) -> dict[str, int]:
    """Drop, from every member's rows, the images any member learned from (all members keep the same rows);
    metrics.json's counts: excluded_seen, and missing_files where the run's own split was scored."""
    first = members[0]
    for member in members[1:]:
        if member.ids != first.ids:
            raise UserError(f"ensemble members scored different images ({member.checkpoint}: {len(member.ids)}, "
                            f"{first.checkpoint}: {len(first.ids)}); evaluate them one at a time.")
    counts = {"excluded_seen": 0}
    if first.unread is not None:
        counts["missing_files"] = len(first.unread.entries)
    seen = set().union(*(m.seen for m in members))
    if not seen:
        return counts
    keep = np.array([k not in seen for k in first.keys or []], dtype=bool)
    excluded = int((~keep).sum())
    counts["excluded_seen"] = excluded
    sources = ", ".join(sorted({m.seen_from for m in members if m.seen}))
    what = " or ".join(SEEN[split]).replace("train", "trained").replace("val", "validated")
    if excluded == len(keep):
        raise UserError(f"all {excluded} {split} images of {first.name} are images the checkpoint was {what} on "
                        f"(by {sources}); evaluate the run's own split (without dataset.* keys that change it) "
                        "or another dataset.")
    if excluded:
        for member in members:
            member.keep(keep)
    log.info(f"left out {excluded} of {len(keep)} {split} images that the checkpoint was {what} on (by "
             f"{sources}): {len(first.probs)} images scored")
    return counts
