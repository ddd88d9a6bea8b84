"""Eval reports: metrics.json, per_class.csv, confusion_matrix.{csv,png}, predictions.csv."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from imgcls_cli import metrics as M
from imgcls_cli.plots import plot_confusion_matrix
from imgcls_cli.rundir import write_csv, write_json, write_text_atomic


def prediction_rows(
    probs: np.ndarray,
    classes: Sequence[str],
    ids: Sequence[str],
    id_column: str,
    topk: int,
    targets: np.ndarray | None = None,
    errors: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per sample with the DESIGN columns: id, label, probability, top<k>_*, target, error."""
    k = max(1, min(int(topk), len(classes)))
    columns = [id_column, "label", "probability"]
    for j in range(2, k + 1):
        columns += [f"top{j}_label", f"top{j}_probability"]
    if targets is not None:
        columns.append("target")
    columns.append("error")
    idx, p = M.topk_predictions(probs, k) if len(probs) else (np.zeros((0, k), int), np.zeros((0, k)))
    rows: list[dict[str, Any]] = []
    it = iter(range(len(probs)))
    for i, sample_id in enumerate(ids):
        error = errors[i] if errors is not None else ""
        row: dict[str, Any] = {id_column: sample_id, "error": error}
        if not error:
            r = next(it)
            row["label"], row["probability"] = classes[idx[r, 0]], round(float(p[r, 0]), 6)
            for j in range(2, k + 1):
                row[f"top{j}_label"] = classes[idx[r, j - 1]]
                row[f"top{j}_probability"] = round(float(p[r, j - 1]), 6)
            if targets is not None:
                row["target"] = classes[int(targets[r])]
        rows.append(row)
    return rows, columns


def confusion_csv(cm: np.ndarray, classes: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["true \\ predicted", *classes])
    for name, row in zip(classes, cm):
        writer.writerow([name, *row.tolist()])
    return buf.getvalue()


def write_eval_reports(
    out_dir: str | Path,
    probs: np.ndarray,
    targets: np.ndarray,
    classes: Sequence[str],
    ids: Sequence[str],
    id_column: str,
    topk: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute the metrics of probs against targets and write every eval file; return metrics.json's dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = M.classification_metrics(probs, targets, topk=[topk])
    preds = probs.argmax(1)
    cm = M.confusion_matrix(targets, preds, len(classes))
    write_json(out / "metrics.json", {**metrics, **(extra or {})})
    per_class = M.per_class_rows(targets, preds, classes)
    write_csv(out / "per_class.csv", per_class, ["class", "precision", "recall", "f1", "support", "accuracy"])
    write_text_atomic(out / "confusion_matrix.csv", confusion_csv(cm, classes))
    plot_confusion_matrix(cm, classes, out / "confusion_matrix.png")
    rows, columns = prediction_rows(probs, classes, ids, id_column, topk, targets)
    write_csv(out / "predictions.csv", rows, columns)
    return metrics


def write_skipped_files(run_dir: Path, skipped: Sequence[tuple[str, str]], log: Any) -> None:
    """skipped_files.txt (path<TAB>reason per line) and one log line, where files could not be decoded."""
    if not skipped:
        return
    write_text_atomic(Path(run_dir) / "skipped_files.txt", "".join(f"{path}\t{why}\n" for path, why in skipped))
    log.warning(f"{len(skipped)} file(s) could not be decoded and were skipped (listed in skipped_files.txt), "
                f"e.g. {skipped[0][0]} ({skipped[0][1]})")
