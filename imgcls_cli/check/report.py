"""report.html of a check: the inventory's tables and each kind of finding with thumbnails of the images (and of the
image each one repeats), built from the run report's pieces (report/markup.py, sections.menu, thumbs.py, assets.py):
one self-contained page, written whole."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from imgcls_cli.check.findings import KINDS
from imgcls_cli.check.listing import Listing
from imgcls_cli.report.assets import SCRIPT, STYLE
from imgcls_cli.report.markup import (document, duration, esc, facts, footer, json_script, key_values, section,
                                      table)
from imgcls_cli.report.safe import write_safely
from imgcls_cli.report.sections import menu
from imgcls_cli.report.thumbs import FileImages, ImageSource, SplitImages, jpeg_base64
from imgcls_cli.rundir import write_text_atomic

log = logging.getLogger("imgcls")
REPORT = "report.html"
TITLES = {"unreadable": "Unreadable files", "duplicate": "Exact duplicates", "near_duplicate": "Near duplicates",
          "leakage": "Leakage between splits", "label_conflict": "One image, two labels",
          "label_issue": "Likely label errors"}
NOTES = {"unreadable": "Files the training decoder cannot read, with the reason.",
         "duplicate": "The same decoded pixels twice in one split: the second copy, then the first.",
         "near_duplicate": "The same picture resized, re-encoded, cropped or brightened, within one split.",
         "leakage": "The same picture (exactly or nearly) in two splits: the copy in the later split is shown first.",
         "label_conflict": "The same picture (exactly or nearly) under two different labels.",
         "label_issue": "Out-of-fold predictions disagree with the label (cleanlab), most likely wrong first; "
                        "score: the model's probability of the given label."}
TABLE_ROWS = 30


def _source(items: Listing) -> ImageSource:
    if items.paths is not None:
        return FileImages({items.ids[i]: p for i, p in enumerate(items.paths)})
    return SplitImages(items.ids, items.images)


def _img(pixels: Any, alt: str) -> str:
    if pixels is None:
        return '<span class="missing">—</span>'
    return f'<img src="data:image/jpeg;base64,{jpeg_base64(pixels)}" alt="{esc(alt)}" title="{esc(alt)}">'


def _figure(row: dict[str, Any], id_column: str, pixels: dict[str, Any]) -> str:
    key, related = str(row[id_column]), row.get("related")
    images = _img(pixels.get(key), key) + (_img(pixels.get(str(related)), str(related)) if related else "")
    if row["kind"] == "unreadable":
        caption = f"{key}: {row.get('reason', '')}"
    elif row["kind"] == "label_issue":
        caption = f"{key} ({row['split']}): labelled {row['class']}, looks like {row['suggested']} ({row['score']})"
    else:
        caption = (f"{key} ({row['split']}, {row['class']}) = {related} ({row.get('related_split')}, "
                   f"{row.get('related_class')}), {row.get('match')} {row.get('score')}")
    return f'<figure class="thumb"><div class="pair">{images}</div><figcaption>{esc(caption)}</figcaption></figure>'


def _findings(items: Listing, rows: list[dict[str, Any]], budget: int) -> list[str]:
    """A section per kind found: its first findings as thumbnails (budget: thumbnails of the page at most)."""
    parts = []
    per_kind = {k: [r for r in rows if r["kind"] == k] for k in KINDS}
    shown_rows = {k: found[:max(1, budget // max(1, sum(map(bool, per_kind.values()))))] if budget else []
                  for k, found in per_kind.items()}
    keys = [str(r[items.id_column]) for found in shown_rows.values() for r in found]
    keys += [str(r["related"]) for found in shown_rows.values() for r in found if r.get("related")]
    pixels = _source(items).load(list(dict.fromkeys(keys))) if keys else {}
    for kind, found in per_kind.items():
        if not found:
            continue
        note = NOTES[kind] + (f" The first {len(shown_rows[kind])} of {len(found)} are shown; issues.csv lists all."
                              if len(shown_rows[kind]) < len(found) else "")
        body = '<div class="thumbs">' + "".join(_figure(r, items.id_column, pixels) for r in shown_rows[kind]) + \
            "</div>"
        parts.append(section(kind.replace("_", "-"), f"{TITLES[kind]} ({len(found)})", body, note))
    return parts


def _inventory(result: dict[str, Any]) -> str:
    splits = list(result["splits"])
    per_class = table(["class", *splits, "total"], [[r["class"], *(r[s] for s in splits), r["total"]]
                                                    for r in result["per_class"]], sortable=True,
                      numeric=range(1, len(splits) + 2))
    tallies = "".join(f"<h3>{esc(name)}</h3>" + table([name.rstrip("s"), "images"], result[name][:TABLE_ROWS],
                                                        numeric=[1])
                      for name in ("sizes", "channels", "modes", "formats"))
    summary = key_values([("images", result["images"]), ("readable", result["readable"]),
                          ("imbalance ratio (largest / smallest class)", result["imbalance_ratio"]),
                          *((f"{s} images", n) for s, n in result["splits"].items())])
    return section("inventory", "Inventory", summary + per_class + tallies,
                   f"Readable images per class and split; sizes, channels, modes and formats (the {TABLE_ROWS} most "
                   "frequent of each).")


def check_page(items: Listing, rows: list[dict[str, Any]], result: dict[str, Any], budget: int) -> str:
    found = result["findings"]
    figures = [("images", result["images"]), ("classes", result["classes"]),
               *((TITLES[k].lower(), found[k]) for k in KINDS if found[k] or k != "label_issue"),
               ("run time", duration(result["wall_seconds"]))]
    head = f"<header><h1>Check of {esc(result['dataset'])}</h1>{facts(figures)}"
    if result.get("command"):
        head += f'<code class="cmd">{esc(result["command"])}</code>'
    if result.get("failed_on"):
        head += f'<p class="warn">fail_on: found {esc(", ".join(result["failed_on"]))}</p>'
    parts = [_inventory(result), *_findings(items, rows, budget)]
    names = {"inventory": "Inventory", **{k.replace("_", "-"): TITLES[k] for k in KINDS}}
    present = ["inventory", *(k.replace("_", "-") for k in KINDS if found[k])]
    body = head + "</header>" + menu(present, names) + "".join(parts) + footer("imgcls check ... (the same command)") + \
        json_script("report-data", {"classes": [], "cells": {}, "cap": 0, "explanations": []})  # the script's
    return document(f"Check of {result['dataset']} — imgcls", STYLE, body, SCRIPT)


def write_check_report_safely(run_dir: Path, items: Listing, rows: list[dict[str, Any]], result: dict[str, Any],
                              budget: int) -> Path | None:
    """report.html, or one warning line when it cannot be written."""
    def write() -> Path:
        path = Path(run_dir) / REPORT
        write_text_atomic(path, check_page(items, rows, result, budget))
        return path

    return write_safely(write, REPORT, log)
