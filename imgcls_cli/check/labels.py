"""Likely label errors: confident learning (cleanlab) over out-of-fold predicted probabilities, ranked by the
self-confidence of the given label (its predicted probability: lowest first)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from imgcls_cli.check.extras import require
from imgcls_cli.check.listing import Listing
from imgcls_cli.check.oof import check_folds, compute_oof, fingerprint, load_oof, save_oof
from imgcls_cli.specs.check import CheckSpec

log = logging.getLogger("imgcls")


def rank_label_issues(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions cleanlab flags, most likely wrong first; every image's label quality score)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = probs / probs.sum(axis=1, keepdims=True)
    flagged = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
    return np.asarray(flagged, dtype=np.int64), get_label_quality_scores(labels, probs, method="self_confidence")


def label_issue_rows(spec: CheckSpec, items: Listing, run_dir: Path, command: str | None) -> list[dict[str, Any]]:
    """A label_issue row for each image cleanlab flags, with its given and its suggested class."""
    require("cleanlab.filter", "labels=true")
    pool = np.flatnonzero(items.info.readable & (items.splits != ""))
    labels = items.labels[pool]
    check_folds(labels, spec.folds, items.classes)
    ids = [items.ids[p] for p in pool]
    key = fingerprint(spec, ids, labels)
    if spec.oof:
        probs = load_oof(spec.oof, key, len(pool), items.classes)
    else:
        probs = compute_oof(spec, items, pool, run_dir, command)
    save_oof(run_dir, probs, key, ids, spec)
    scored = ~np.isnan(probs).any(axis=1)
    flagged, quality = rank_label_issues(labels[scored], probs[scored])
    positions, probs = pool[scored], probs[scored]
    log.info(f"labels: {len(flagged)} likely label errors among {len(positions)} images (cleanlab)")
    rows = []
    for rank in flagged:
        p = int(positions[rank])
        suggested = items.classes[int(np.argmax(probs[rank]))]
        rows.append({"kind": "label_issue", items.id_column: items.ids[p], "split": items.splits[p],
                     "class": items.classes[int(items.labels[p])], "suggested": suggested,
                     "score": round(float(quality[rank]), 6), "position": p})
    return rows
