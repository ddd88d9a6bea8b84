"""task=multilabel's side of the reports: each label's threshold tuned on the validation split (and saved in the
checkpoint), predictions.csv rows holding a set of labels, and the eval folder (metrics.json, per_label.csv, the
per-label plots) through imgcls_cli.multilabel."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from imgcls_cli.checkpoint import save_checkpoint
from imgcls_cli.rundir import write_csv

log = logging.getLogger("imgcls")
SEPARATOR = "|"


def is_multilabel(ckpt: dict[str, Any]) -> bool:
    return ckpt.get("task") == "multilabel"


def label_set(row: np.ndarray, classes: Sequence[str]) -> str:
    """The labels of a multi-hot (or boolean) row, joined by '|' (empty: no label)."""
    return SEPARATOR.join(str(classes[i]) for i in np.flatnonzero(np.asarray(row) > 0.5))


def prediction_rows(probs: np.ndarray, classes: Sequence[str], thresholds: Sequence[float], ids: Sequence[str],
                    id_column: str, topk: int, targets: np.ndarray | None = None,
                    errors: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per image: label (every label at or above its threshold, joined by '|', most probable first),
    probability (theirs, in the same order), top<j>_label / top<j>_probability for j = 1..k (the most probable
    labels whatever the thresholds), target (the true set) where known, error."""
    k = max(1, min(int(topk), len(classes)))
    columns = [id_column, "label", "probability"] + [f"top{j}_{c}" for j in range(1, k + 1)
                                                      for c in ("label", "probability")]
    columns += ["target"] * (targets is not None) + ["error"]
    limits = np.asarray(thresholds, dtype=np.float64)
    rows, it = [], iter(range(len(probs)))
    for i, sample_id in enumerate(ids):
        error = errors[i] if errors is not None else ""
        row: dict[str, Any] = {id_column: sample_id, "error": error}
        if not error:
            r = next(it)
            p = probs[r].astype(np.float64)
            order = np.argsort(-p, kind="stable")
            chosen = [j for j in order if p[j] >= limits[j]]
            row["label"] = SEPARATOR.join(str(classes[j]) for j in chosen)
            row["probability"] = SEPARATOR.join(f"{p[j]:.6f}" for j in chosen)
            for rank, j in enumerate(order[:k], start=1):
                row[f"top{rank}_label"], row[f"top{rank}_probability"] = str(classes[j]), round(float(p[j]), 6)
            if targets is not None:
                row["target"] = label_set(targets[r], classes)
        rows.append(row)
    return rows, columns


def write_reports(out_dir: str | Path, probs: np.ndarray, targets: np.ndarray, classes: Sequence[str],
                  thresholds: Sequence[float], ids: Sequence[str], id_column: str, topk: int,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The eval folder of a multilabel model: multilabel.report's files, and predictions.csv."""
    from imgcls_cli.multilabel.report import write_multilabel_reports

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = write_multilabel_reports(out, probs, targets, np.asarray(thresholds, dtype=np.float64),
                                       list(classes), extra=extra)
    rows, columns = prediction_rows(probs, classes, thresholds, ids, id_column, topk, targets)
    write_csv(out / "predictions.csv", rows, columns)
    return metrics


def tune_and_save(path: Path, ckpt: dict[str, Any], probs: np.ndarray, targets: np.ndarray, fixed: Any
                  ) -> list[float]:
    """Each label's threshold (fixed: threshold= as given; else the one that maximizes the label's F1 on these
    validation rows), written into ckpt, the checkpoint read from path, and saved there (atomically); returns them."""
    from imgcls_cli.multilabel.metrics import check_thresholds, tune_thresholds

    labels = len(ckpt["classes"])
    if fixed is not None:
        chosen = check_thresholds(fixed, labels)
    elif len(targets):
        chosen = tune_thresholds(probs, targets)
    else:
        chosen = check_thresholds(0.5, labels)
    ckpt["thresholds"] = [min(max(float(t), 1e-12), 1 - 1e-12) for t in chosen]  # float64: never rounded onto a score
    save_checkpoint(ckpt, path)
    how = "as given (threshold=)" if fixed is not None else (
        f"tuned on {len(targets)} validation images" if len(targets) else "0.5 (no validation split to tune on)")
    log.info(f"thresholds of {path.name} {how}: " + ", ".join(
        f"{c} {t:.3g}" for c, t in zip(ckpt["classes"], ckpt["thresholds"])))
    return ckpt["thresholds"]
