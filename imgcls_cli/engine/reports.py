"""Eval reports: metrics.json, per_class.csv, confusion_matrix{,_normalized}.csv, confusion_matrix.png,
classification_report.txt, reliability.png, misclassified.png (when images are given) and predictions.csv."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from imgcls_cli import metrics as M
from imgcls_cli.plots import image_grid_figure, plot_confusion_matrix, plot_reliability, save_figure, shorten
from imgcls_cli.rundir import csv_line, spreadsheet_safe, write_csv, write_json, write_text_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MISCLASSIFIED_TITLE = "Most confident errors, each titled: true class → predicted class (probability of the prediction)"


def result_columns(topk: int, multilabel: bool = False) -> list[str]:
    """The metrics a results table shows, in its order: eval's members table, the sweep leaderboard and the
    Results table of a training run (multilabel: subset accuracy, mAP, micro and macro F1 at the thresholds)."""
    if multilabel:
        return ["accuracy", "map_macro", "f1_micro", "f1_macro", "loss"]
    return ["accuracy", f"top{topk}_accuracy", "f1_macro", "loss"]


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


def confusion_csv(cm: np.ndarray, classes: Sequence[str], corner: str = "true \\ predicted") -> str:
    """The matrix as CSV with class names on both axes; the corner cell names the orientation (rows = true).
    Class names a spreadsheet would run as formulas are quoted (rundir.spreadsheet_safe)."""
    lines = [csv_line([corner, *map(spreadsheet_safe, classes)])]
    lines += [csv_line([spreadsheet_safe(name), *row.tolist()]) for name, row in zip(classes, cm)]
    return "".join(lines)


def classification_report(per_class: Sequence[dict[str, Any]], metrics: dict[str, Any], digits: int = 4) -> str:
    """scikit-learn's classification_report layout, from the numbers of per_class.csv and metrics.json so the
    files cannot disagree: a row per class, then accuracy, macro avg and weighted avg."""
    width = max(len("weighted avg"), digits, *(len(str(row["class"])) for row in per_class))
    total = sum(int(row["support"]) for row in per_class)

    def line(name: str, precision: float, recall: float, f1: float, support: int) -> str:
        scores = "".join(f" {value:>9.{digits}f}" for value in (precision, recall, f1))
        return f"{name:>{width}} {scores} {support:>9}\n"

    header = " " * (width + 1) + "".join(f" {name:>9}" for name in ("precision", "recall", "f1-score", "support"))
    rows = "".join(line(str(r["class"]), r["precision"], r["recall"], r["f1"], r["support"]) for r in per_class)
    accuracy = f"{'accuracy':>{width}} {'':20} {metrics['accuracy']:>9.{digits}f} {total:>9}\n"
    averages = "".join(line(f"{avg} avg", metrics[f"precision_{avg}"], metrics[f"recall_{avg}"],
                            metrics[f"f1_{avg}"], total) for avg in ("macro", "weighted"))
    return f"{header}\n\n{rows}\n{accuracy}{averages}"


def error_title(true: str, predicted: str, probability: float) -> str:
    """"cat → dog (0.97)", each class name cut to 12 characters so that the title fits above its image."""
    return f"{shorten(str(true), 12)} → {shorten(str(predicted), 12)} ({probability:.2f})"


def misclassified_figure(images: np.ndarray, probs: np.ndarray, targets: np.ndarray,
                         classes: Sequence[str]) -> Figure | None:
    """The most confident errors titled "true → predicted (p)", the figure's title saying so; None when nothing is
    wrong."""
    worst = M.most_confident_errors(probs, targets, limit=32)
    if len(worst) == 0:
        return None
    preds = probs[worst].argmax(1)
    titles = [error_title(classes[int(targets[i])], classes[int(p)], probs[i, p]) for i, p in zip(worst, preds)]
    return image_grid_figure(np.asarray(images)[worst], titles, title=MISCLASSIFIED_TITLE)


def write_misclassified(
    path: Path, images: np.ndarray, probs: np.ndarray, targets: np.ndarray, classes: Sequence[str]
) -> None:
    """misclassified.png (misclassified_figure); no file when nothing is wrong."""
    fig = misclassified_figure(images, probs, targets, classes)
    if fig is not None:
        save_figure(fig, path)


def write_eval_reports(
    out_dir: str | Path,
    probs: np.ndarray,
    targets: np.ndarray,
    classes: Sequence[str],
    ids: Sequence[str],
    id_column: str,
    topk: int,
    extra: dict[str, Any] | None = None,
    images: np.ndarray | None = None,
) -> dict[str, Any]:
    """Compute the metrics of probs against targets and write every eval file; return metrics.json's dict.

    images: (N, C, H, W) uint8 or float in the order of probs; only then is misclassified.png written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if images is not None and len(images) != len(probs):
        raise ValueError(f"images and probs differ in length: {len(images)} vs {len(probs)}")
    metrics = M.classification_metrics(probs, targets, topk=[topk])
    preds = probs.argmax(1)
    cm = M.confusion_matrix(targets, preds, len(classes))
    write_json(out / "metrics.json", {**metrics, **(extra or {})})
    per_class = M.per_class_rows(targets, preds, classes)
    write_csv(out / "per_class.csv", per_class, ["class", "precision", "recall", "f1", "support", "accuracy"])
    write_text_atomic(out / "classification_report.txt", classification_report(per_class, metrics))
    write_text_atomic(out / "confusion_matrix.csv", confusion_csv(cm, classes))
    write_text_atomic(out / "confusion_matrix_normalized.csv",
                      confusion_csv(np.round(M.row_normalized(cm), 6), classes, "true \\ predicted (row fraction)"))
    plot_confusion_matrix(cm, classes, out / "confusion_matrix.png")
    plot_reliability(*M.calibration_bins(probs, targets), metrics["ece"], out / "reliability.png")
    if images is not None:
        write_misclassified(out / "misclassified.png", images, probs, targets, classes)
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
