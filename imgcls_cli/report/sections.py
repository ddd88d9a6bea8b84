"""The sections of a run's page, each built from a RunRecord (rundata.py): header, curves, metrics, per-class,
calibration, confusion matrix, explanations, skipped files, config and environment."""
from __future__ import annotations

import base64
import math
from typing import Any

from imgcls_cli.metrics import confidence_bins
from imgcls_cli.report import markup
from imgcls_cli.report.gallery import Gallery
from imgcls_cli.report.markup import duration, esc, key_values, percent, pre, section, table
from imgcls_cli.report.rundata import Evaluation, RunRecord
from imgcls_cli.report.svg import PALETTE, Series, line_chart, reliability_diagram
from imgcls_cli.report.thumbs import CELL_CAP, MAX_EXPLANATIONS, MAX_THUMBNAILS, THUMB_SIZE

MAX_SKIPPED_ROWS = 1000  # skipped files listed in the page (all of them are in skipped_files.txt)
SMALL_MATRIX = 30  # classes from which the matrix's cells drop their numbers (each has its count as a tooltip)
NOT_CURVES = {"epoch", "lr", "epoch_seconds", "images_per_second"}


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def title_of(record: RunRecord) -> str:
    s, cfg = record.summary, record.config
    if record.kind == "train":
        model, dataset = (cfg.get("model") or {}).get("name"), (cfg.get("dataset") or {}).get("name")
        return f"{model or 'model'} on {dataset or 'dataset'}"
    what = s.get("model") or "checkpoint"
    where = s.get("dataset") or ((cfg.get("dataset") or {}).get("name") if isinstance(cfg.get("dataset"), dict)
                                 else None) or "its dataset"
    return f"{what} evaluated on {where} ({s.get('split') or cfg.get('split') or 'test'} split)"


def header(record: RunRecord) -> str:
    s, ev = record.summary, record.evaluation
    status = str(s.get("status") or ("completed" if record.kind == "eval" and ev else "unknown"))
    accuracy = ev.metrics.get("accuracy") if ev else s.get("test_accuracy")
    split = s.get("split") or "test"
    figures: list[tuple[str, Any]] = [(f"{split} accuracy", percent(accuracy))]
    if ev is not None and ev.multilabel:  # subset accuracy is harsh; the mAP is the multilabel score
        figures = [(f"{split} mAP", percent(ev.metrics.get("map_macro"))), *figures]
    if record.kind == "train":
        best = s.get("best_epoch")
        figures += [("best val accuracy" + (f" (epoch {best})" if best is not None else ""),
                     percent(s.get("best_val_accuracy"))),
                    ("epochs", f"{s.get('epochs_completed', len(record.epochs))} of "
                               f"{record.config.get('epochs', '?')}"),
                    ("train images/s", s.get("train_images_per_second", "—"))]
    elif ev:
        figures.append(("images", ev.metrics.get("num_samples", len(ev.predictions))))
    figures.append(("run time", duration(s.get("wall_seconds"))))
    lines = [f'<h1>{esc(title_of(record))} <span class="status {esc(status)}">{esc(status)}</span></h1>',
             markup.facts(figures)]
    if s.get("error"):
        lines.append(f'<p class="warn">error: {esc(s["error"])}</p>')
    if s.get("command"):
        lines.append(f'<code class="cmd">{esc(s["command"])}</code>')
    lines.append(f'<p class="note">{esc(record.kind)} run directory: {esc(record.run_dir)}</p>')
    lines += [f'<p class="warn">{esc(note)}</p>' for note in record.notes]
    return "<header>" + "".join(lines) + "</header>"


def curves(record: RunRecord) -> str:
    rows = record.epochs
    if not rows:
        return section("curves", "Curves", "", "No epoch was recorded (metrics.csv is missing or empty).")
    epochs = [_float(r.get("epoch")) for r in rows]
    columns = [c for c in rows[0] if c not in NOT_CURVES]
    best = _float(record.summary.get("best_epoch"))
    charts = []
    for title, word, y_range in (("Loss", "loss", None), ("Accuracy", "accuracy", (0.0, 1.0))):
        names = [c for c in columns if word in c]
        series = [Series(c.replace("_", " "), epochs, [_float(r.get(c)) for r in rows], PALETTE[i % len(PALETTE)],
                         dashed=not c.startswith(("train", "val"))) for i, c in enumerate(names)]
        charts.append(line_chart(title, series, y_label=word, mark_x=best, mark_label=f"best epoch {best:g}"
                                 if math.isfinite(best) else "", y_range=y_range))
    if "lr" in rows[0]:
        charts.append(line_chart("Learning rate", [Series("lr", epochs, [_float(r.get("lr")) for r in rows],
                                                          PALETTE[2])], y_label="lr (at the epoch's start)"))
    note = "From metrics.csv; the dashed line marks the best epoch (best.pt)." if math.isfinite(best) else \
        "From metrics.csv."
    return section("curves", "Curves", f'<div class="charts">{"".join(charts)}</div>', note)


def metrics_table(record: RunRecord, ev: Evaluation) -> str:
    rows = [(k, ", ".join(map(str, v)) if isinstance(v, list) else str(v) if isinstance(v, dict) else v)
            for k, v in ev.metrics.items()]
    where = "metrics.json" if ev.folder == record.run_dir else f"{ev.folder.name}/metrics.json"
    return section("metrics", "Metrics", key_values(rows), f"From {where}.")


def per_class(ev: Evaluation) -> str:
    body = _rows_table(ev, "class")
    return section("per-class", "Per class", body, "Click a column's header to sort by it.") if body else ""


def _rows_table(ev: Evaluation, name_column: str) -> str:
    """per_class.csv's (or per_label.csv's) rows as a sortable table; empty without rows."""
    if not ev.per_class:
        return ""
    columns = list(ev.per_class[0])
    rows = [[_number_or_text(r.get(c)) for c in columns] for r in ev.per_class]
    return table(columns, rows, sortable=True, numeric={i for i, c in enumerate(columns) if c != name_column})


PER_LABEL_FIGURES = (("ap_per_label.png", "Average precision of each label"),
                     ("pr_curves.png", "Precision-recall curves of the labels with the lowest AP"),
                     ("confusion_per_label.png", "Each label's 2x2 confusion matrix at its threshold"))


def per_label(ev: Evaluation) -> str:
    """task=multilabel: per_label.csv as a sortable table, then the eval folder's per-label figures inline."""
    if not ev.per_class:
        return ""
    figures = "".join(f'<figure><img alt="{esc(title)}" src="data:image/png;base64,'
                      f'{base64.b64encode((ev.folder / name).read_bytes()).decode()}"><figcaption>{esc(title)}'
                      f'</figcaption></figure>' for name, title in PER_LABEL_FIGURES if (ev.folder / name).is_file())
    return section("per-label", "Per label", _rows_table(ev, "label") + figures,
                   "Each label's average precision, and its precision, recall and F1 at its threshold (tuned on the "
                   "validation split). Click a column's header to sort by it.")


def _number_or_text(value: Any) -> Any:
    number = _float(value)
    return value if math.isnan(number) or str(value).strip() == "" else (int(number) if number.is_integer()
                                                                          and "." not in str(value) else number)


def calibration(ev: Evaluation) -> str:
    scored = [p for p in ev.predictions if math.isfinite(p.probability)]
    if not scored:
        return ""
    counts, accuracy, confidence = confidence_bins([p.probability for p in scored],
                                                   [p.label == p.target for p in scored])
    ece = ev.metrics.get("ece")
    chart = reliability_diagram(counts.tolist(), accuracy.tolist(), confidence.tolist(),
                                float(ece) if isinstance(ece, (int, float)) else None)
    return section("calibration", "Calibration", chart, "Bars: the accuracy of the predictions in each confidence bin "
                   "(15 bins); diamonds: their mean confidence, joined to the bar by the gap. A bar under its diamond "
                   "is over-confidence. Hover a bar for its count.")


def _cell(t: int, p: int, count: int, share: float, tip: str) -> str:
    """A clickable cell: its count, shaded by its share of the row (green on the diagonal, red off it)."""
    style = ""
    if count:
        rgb = "26,127,55" if t == p else "207,34,46"
        style = f' style="background:rgba({rgb},{share:.3f}){";color:#fff" if share > 0.5 else ""}"'
    return (f'<td class="cell" tabindex="0" role="button" data-t="{t}" data-p="{p}" data-n="{count}"{style} '
            f'title="{esc(tip)}">{count}</td>')


def _grid(ev: Evaluation, gallery: Gallery) -> tuple[str, int]:
    n = len(ev.classes)
    counts = [[gallery.cells.get(f"{t},{p}", {}).get("n", 0) for p in range(n)] for t in range(n)]
    head = "".join(f'<th class="colhead" scope="col">{esc(c)}</th>' for c in ev.classes)
    body = []
    for t, name in enumerate(ev.classes):
        total = sum(counts[t]) or 1
        cells = "".join(_cell(t, p, count, count / total, f"true {name}, predicted {ev.classes[p]}: {count} "
                                                          f"({100 * count / total:.1f}% of the row)")
                        for p, count in enumerate(counts[t]))
        body.append(f'<tr><th class="row" scope="row">{esc(name)}</th>{cells}</tr>')
    small = " small" if n > SMALL_MATRIX else ""
    return (f'<table class="cm{small}"><thead><tr><th>true \\ predicted</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>'), sum(map(sum, counts))


def _listed(ev: Evaluation, gallery: Gallery) -> str:
    """The largest cells, one a row, for a matrix too large to draw."""
    rows = []
    for key, cell in gallery.cells.items():
        t, p = map(int, key.split(","))
        true, predicted, count = ev.classes[t], ev.classes[p], cell["n"]
        tip = f"true {true}, predicted {predicted}: {count}"
        rows.append(f"<tr><td>{esc(true)}</td><td>{esc(predicted)}</td>{_cell(t, p, count, 0.0, tip)}</tr>")
    return ('<table class="cm listed"><thead><tr><th>true</th><th>predicted</th><th>images</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def confusion(ev: Evaluation, gallery: Gallery, images_note: str) -> str:
    total = len(ev.predictions)
    if gallery.grid:
        table, total = _grid(ev, gallery)
        note = f"Rows: true class, columns: predicted ({total} images). Click a cell for its images: "
    else:
        table = _listed(ev, gallery)
        note = (f"{len(ev.classes)} classes: the {len(gallery.cells)} largest cells of the matrix ({total} images; "
                "all of it is in confusion_matrix.csv). Click a count for its images: ")
    note += (f"at most {gallery.cap} a cell (thumbnails are capped: {CELL_CAP} a cell, fewer where the page would "
             f"hold more than {MAX_THUMBNAILS}, the largest cells first; {THUMB_SIZE} px JPEGs), explained images "
             "first, then errors most confident first and right answers least confident first.")
    if images_note:
        note += " " + images_note
    if gallery.unread and not gallery.shown:
        note += " Thumbnails: none, the images could not be read (moved or deleted since the run?)."
    elif gallery.unread:
        note += f" {gallery.unread} of the images chosen could not be read."
    body = f'<div class="cm-wrap">{table}</div><div id="cell-view"></div>'
    return section("confusion", "Confusion matrix", body, note)


def explanations(ev: Evaluation, unread: int) -> str:
    if not ev.explanations:
        return ""
    note = f"{len(ev.explanations)} explanation(s) in explain/explanations.csv"
    if len(ev.explanations) > MAX_EXPLANATIONS:
        note += f", the first {MAX_EXPLANATIONS} shown"
    note += "; each is also shown beside its image in the confusion matrix's cell."
    if unread:
        note += f" {unread} overlay file(s) could not be read."
    return section("explanations", "Explanations", '<div id="explanation-grid" class="thumbs"></div>', note)


def skipped(record: RunRecord) -> str:
    if not record.skipped:
        return ""
    rows = record.skipped[:MAX_SKIPPED_ROWS]
    note = f"{len(record.skipped)} file(s) could not be read (skipped_files.txt)"
    if len(record.skipped) > len(rows):
        note += f"; the first {len(rows)} are listed"
    return section("skipped", "Skipped files", table(["file", "reason"], rows), note + ".")


def config(record: RunRecord) -> str:
    if not record.config_text:
        return ""
    return section("config", "Config", pre(record.config_text), "config.yaml: the resolved config of the run.")


def environment(record: RunRecord) -> str:
    s = record.summary
    keys = ("device", "precision", "channels_last", "seed", "batch_size", "git_commit", "checkpoint", "checkpoints",
            "tta", "ensemble")
    rows: list[tuple[str, Any]] = [(k.replace("_", " "), s[k]) for k in keys if s.get(k) is not None]
    versions = s.get("versions") if isinstance(s.get("versions"), dict) else {}
    rows += [(name, version) for name, version in versions.items()]
    if not rows:
        return section("environment", "Environment", "", "Not recorded by this run.")
    rows = [(k, ", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in rows]
    source = "summary.json" if record.kind == "train" else "run_info.json"
    return section("environment", "Environment", key_values(rows), f"From {source}.")


def menu(present: list[str], names: dict[str, str] | None = None) -> str:
    """Links to the sections present, in the order of `names` (default: a run report's sections)."""
    names = names or {"curves": "Curves", "metrics": "Metrics", "per-class": "Per class", "per-label": "Per label",
                      "calibration": "Calibration", "confusion": "Confusion matrix", "explanations": "Explanations",
                      "skipped": "Skipped files", "config": "Config", "environment": "Environment"}
    return "<nav>" + "".join(f'<a href="#{a}">{esc(names[a])}</a>' for a in names if a in present) + "</nav>"
