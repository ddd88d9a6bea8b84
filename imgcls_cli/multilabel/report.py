"""The files of a multi-label evaluation: metrics.json, per_label.csv, multilabel_confusion.csv and the figures
ap_per_label.png, confusion_per_label.png and pr_curves.png."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imgcls_cli.multilabel.metrics import confusion_counts, multilabel_metrics, per_label_rows
from imgcls_cli.multilabel.plots import ap_bars_figure, confusion_grid_figure, pr_curves_figure
from imgcls_cli.plots import save_figure
from imgcls_cli.rundir import write_csv, write_json

PER_LABEL_COLUMNS = ("label", "ap", "precision", "recall", "f1", "support", "predicted", "threshold")
CONFUSION_COLUMNS = ("label", "tn", "fp", "fn", "tp")


def json_safe(value: Any) -> Any:
    """value with every NaN or infinite float (nested in dicts and lists too) replaced by None, and numpy numbers
    made Python ones: JSON has no NaN, and json.dumps would write one that strict readers refuse."""
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_multilabel_reports(out_dir: str | Path, probs: np.ndarray, targets: np.ndarray,
                             thresholds: np.ndarray | float, classes: Sequence[str],
                             extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Compute the metrics of probs against targets at the thresholds and write every multi-label eval file
    into out_dir; return metrics.json's dict (multilabel_metrics, then extra's keys, which win; NaN as None).

    per_label.csv leaves a label's ap empty where it has no positive rows."""
    out = Path(out_dir)
    metrics = json_safe({**multilabel_metrics(probs, targets, thresholds), **(extra or {})})
    write_json(out / "metrics.json", metrics)
    rows = per_label_rows(probs, targets, thresholds, classes)
    write_csv(out / "per_label.csv", json_safe(rows), PER_LABEL_COLUMNS)
    counts = confusion_counts(probs, targets, thresholds)
    write_csv(out / "multilabel_confusion.csv",
              [{"label": str(name), "tn": int(m[0, 0]), "fp": int(m[0, 1]), "fn": int(m[1, 0]), "tp": int(m[1, 1])}
               for name, m in zip(classes, counts)], CONFUSION_COLUMNS)
    save_figure(ap_bars_figure(rows), out / "ap_per_label.png")
    save_figure(confusion_grid_figure(probs, targets, thresholds, classes), out / "confusion_per_label.png")
    save_figure(pr_curves_figure(probs, targets, classes, thresholds=thresholds), out / "pr_curves.png")
    return metrics
