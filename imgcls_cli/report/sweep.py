"""sweep_report.html: a sweep's summary table (summary.csv) with a link to each job's report.html, and the jobs'
curves side by side, each job in one colour and named by its number (as compare.png names them)."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any
from urllib.parse import quote

from imgcls_cli.report.assets import SCRIPT, STYLE
from imgcls_cli.report import markup
from imgcls_cli.report.markup import document, duration, esc, json_script, number, section
from imgcls_cli.report.safe import write_safely
from imgcls_cli.report.svg import PALETTE, Series, line_chart
from imgcls_cli.rundir import SWEEP_COLUMNS, read_csv, write_text_atomic

SWEEP_REPORT = "sweep_report.html"
# summary.csv's columns; a sweep without one is read from its jobs' summary.json
COLUMNS = SWEEP_COLUMNS
NUMBERS = COLUMNS[3:]
CURVES = (("Validation accuracy", "val_accuracy", (0.0, 1.0)), ("Validation loss", "val_loss", None),
          ("Training loss", "train_loss", None))


def sweep_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """summary.csv's rows, or (a sweep still running, or whose summary is gone) one row per job's summary.json."""
    if (sweep_dir / "summary.csv").is_file():
        return read_csv(sweep_dir / "summary.csv")
    rows = []
    for folder in sorted(p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")):
        job = folder.name.split("_", 1)[0]
        row: dict[str, Any] = {"job": job, "overrides": folder.name.split("_", 1)[-1], "status": "unknown"}
        try:
            row.update({k: v for k, v in json.loads((folder / "summary.json").read_text()).items() if k in COLUMNS})
        except (OSError, ValueError, AttributeError):
            pass
        rows.append(row)
    return sorted(rows, key=lambda r: (0, int(r["job"])) if str(r["job"]).isdigit() else (1, str(r["job"])))


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def job_dir(sweep_dir: Path, job: str) -> Path | None:
    """The folder of job number `job` (`<job>_<overrides>`), or None."""
    return next((p for p in sorted(sweep_dir.iterdir()) if p.is_dir() and p.name.startswith(f"{job}_")), None)


def _table(sweep_dir: Path, rows: list[dict[str, Any]]) -> str:
    head = "".join(f'<th scope="col"{" class=num" if c in NUMBERS else ""}>{esc(c)}</th>' for c in (*COLUMNS, "report"))
    body = []
    for row in rows:
        folder = job_dir(sweep_dir, str(row["job"]))
        report = folder / "report.html" if folder is not None else None
        link = (f'<a href="{esc(quote(folder.name))}/report.html">{esc(folder.name)}</a>'
                if report is not None and report.is_file() else "—")
        cells = "".join(f'<td{" class=num" if c in NUMBERS else ""}>{esc(number(row.get(c)))}</td>' for c in COLUMNS)
        body.append(f"<tr>{cells}<td>{link}</td></tr>")
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _curves(sweep_dir: Path, rows: list[dict[str, Any]]) -> str:
    jobs = []
    for row in rows:
        folder = job_dir(sweep_dir, str(row["job"]))
        if folder is not None and (folder / "metrics.csv").is_file():
            jobs.append((f"job {row['job']}", read_csv(folder / "metrics.csv")))
    charts = []
    for title, column, y_range in CURVES:
        series = [Series(label, [_float(r.get("epoch")) for r in epochs], [_float(r.get(column)) for r in epochs],
                         PALETTE[i % len(PALETTE)], dashed=i >= len(PALETTE)) for i, (label, epochs) in enumerate(jobs)]
        charts.append(line_chart(title, series, y_label=column.replace("_", " "), y_range=y_range))
    return f'<div class="charts">{"".join(charts)}</div>' if jobs else ""


def sweep_page(sweep_dir: Path) -> str:
    rows = sweep_rows(sweep_dir)
    failed = sum(1 for r in rows if r.get("status") != "completed")
    best = max((r for r in rows if math.isfinite(_float(r.get("best_val_accuracy")))),
               key=lambda r: _float(r.get("best_val_accuracy")), default=None)
    figures = [("jobs", len(rows)), ("failed", failed),
             ("total run time", duration(sum(v for r in rows if math.isfinite(v := _float(r.get("wall_seconds"))))))]
    if best is not None:
        figures.append((f"best val accuracy (job {best['job']})", f"{100 * _float(best['best_val_accuracy']):.2f}%"))
    header = (f"<header><h1>Sweep of {len(rows)} job(s)</h1>{markup.facts(figures)}"
              f'<p class="note">sweep directory: {esc(sweep_dir)}</p></header>')
    curves = _curves(sweep_dir, rows)
    body = header + section("jobs", "Jobs", _table(sweep_dir, rows), "From summary.csv; click a column's header to "
                            "sort by it, a job's folder for its own report.html.")
    if curves:
        body += section("curves", "Curves", curves, "Each job's metrics.csv, named by its number (its overrides "
                        "are in the table above).")
    body += markup.footer("imgcls report SWEEP_DIR")
    body += json_script("report-data", {"classes": [], "cells": {}, "cap": 0, "explanations": []})
    return document(f"Sweep {sweep_dir.name} — imgcls report", STYLE, body, SCRIPT)


def write_sweep_report(sweep_dir: str | Path) -> Path:
    path = Path(sweep_dir) / SWEEP_REPORT
    write_text_atomic(path, sweep_page(Path(sweep_dir)))
    return path


def write_sweep_report_safely(sweep_dir: str | Path) -> Path | None:
    """write_sweep_report; a failure is one warning line, and the sweep's summary and exit status stay."""
    return write_safely(lambda: write_sweep_report(sweep_dir), SWEEP_REPORT, logging.getLogger("imgcls"))
