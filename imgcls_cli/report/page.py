"""report.html of a train or eval run directory: the sections (sections.py) around the confusion matrix's
thumbnails (gallery.py), written whole (temp file, then os.replace). write_report_safely is what a run calls: a
report that cannot be built is one warning line, never a failed run."""
from __future__ import annotations

import logging
import re
from pathlib import Path

from imgcls_cli.report import sections as S
from imgcls_cli.report.assets import SCRIPT, STYLE
from imgcls_cli.report.gallery import build_gallery, explanation_data
from imgcls_cli.report.markup import document, footer, json_script
from imgcls_cli.report.rundata import RunRecord, read_run
from imgcls_cli.report.safe import write_safely
from imgcls_cli.report.thumbs import MAX_THUMBNAILS, ImageSource
from imgcls_cli.rundir import write_text_atomic

REPORT = "report.html"
NO_TEST = "No test evaluation in this run (no eval/ folder: the run did not finish, or it had no test split)."


def run_page(record: RunRecord, images: ImageSource | None, images_note: str = "") -> str:
    """The whole page of a run, as text."""
    ev = record.evaluation
    parts = [S.curves(record)] if record.kind == "train" else []
    data: dict = {"classes": [], "cells": {}, "cap": 0, "explanations": []}
    if ev is None:
        parts.append(S.section("metrics", "Metrics", "", NO_TEST))
    elif ev.multilabel:
        parts += [S.metrics_table(record, ev), S.per_label(ev)]
    else:
        overlays, explained, unread_overlays = explanation_data(ev)
        gallery = build_gallery(ev, images, explained)
        if images is None and not images_note:
            images_note = "Thumbnails: not available for this run."
        data = {"classes": ev.classes, "cells": gallery.cells, "cap": gallery.cap, "budget": MAX_THUMBNAILS,
                "explanations": overlays}
        parts += [S.metrics_table(record, ev), S.per_class(ev), S.calibration(ev),
                  S.confusion(ev, gallery, images_note), S.explanations(ev, unread_overlays)]
    parts += [S.skipped(record), S.config(record), S.environment(record)]
    parts = [p for p in parts if p]
    present = re.findall(r'<section id="([\w-]+)"', "".join(parts))
    body = S.header(record) + S.menu(present) + "".join(parts) + footer("imgcls report RUN_DIR") + \
        json_script("report-data", data)
    return document(f"{S.title_of(record)} — imgcls report", STYLE, body, SCRIPT)


def write_run_report(run_dir: str | Path, images: ImageSource | None = None, images_note: str = "") -> Path:
    """Write <run_dir>/report.html from the run's files; images: the evaluated images' pixels (thumbnails), or
    None (the page says why with images_note)."""
    record = read_run(Path(run_dir))
    path = Path(run_dir) / REPORT
    write_text_atomic(path, run_page(record, images, images_note))
    return path


def write_report_safely(run_dir: str | Path, images: ImageSource | None, log: logging.Logger,
                        images_note: str = "") -> Path | None:
    """write_run_report, where a failure is one warning line in the log and nothing else: the run's status and
    files stay as they are."""
    return write_safely(lambda: write_run_report(run_dir, images, images_note), REPORT, log)
