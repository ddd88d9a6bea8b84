"""`imgcls check`: list the dataset, take its inventory, find unreadable files, duplicates, leaks and (labels=true)
likely label errors; write check.json, issues.csv, report.html (and clean.csv), show the counts, and say which
fail_on kinds were found."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from imgcls_cli import console as out
from imgcls_cli.check import findings as F
from imgcls_cli.check.duplicates import exact_groups, near_pairs
from imgcls_cli.check.inventory import inventory
from imgcls_cli.check.listing import Listing, list_dataset
from imgcls_cli.rundir import write_json
from imgcls_cli.specs.check import CheckSpec

log = logging.getLogger("imgcls")


def find_duplicates(spec: CheckSpec, items: Listing) -> list[dict[str, Any]]:
    info = items.info
    groups = exact_groups(info.digest, info.readable)
    near = near_pairs(info.hashes, info.thumbs, info.readable, info.digest, spec.near_distance,
                      spec.near_similarity)
    return F.duplicate_rows(items, groups, near)


def run_check(spec: CheckSpec, run_dir: str | Path, command: str | None = None) -> dict[str, Any]:
    """Check the dataset; returns check.json's content (failed_on: the fail_on kinds that were found)."""
    run_dir = Path(run_dir)
    started = time.perf_counter()
    items = list_dataset(spec)
    listed = time.perf_counter()
    rows = F.unreadable_rows(items) + find_duplicates(spec, items)
    timings = {"read_seconds": round(listed - started, 2),
               "duplicates_seconds": round(time.perf_counter() - listed, 2)}
    if spec.labels:
        from imgcls_cli.check.labels import label_issue_rows

        labelled = time.perf_counter()
        rows += label_issue_rows(spec, items, run_dir, command)
        timings["labels_seconds"] = round(time.perf_counter() - labelled, 2)
    found = F.counts(rows)
    failed_on = [g for g in spec.fail_on if found[f"{g}_total"]]
    result = {**inventory(items), "findings": found, "fail_on": list(spec.fail_on), "failed_on": failed_on,
              "settings": _settings(spec), **timings, "wall_seconds": round(time.perf_counter() - started, 2),
              "command": command}
    F.write_issues(run_dir / "issues.csv", items, rows)
    if spec.write_clean:
        result["clean_images"] = F.write_clean(run_dir / "clean.csv", items, rows)
    write_json(run_dir / "check.json", result)
    from imgcls_cli.check.report import write_check_report_safely

    write_check_report_safely(run_dir, items, rows, result, spec.thumbnails)
    _show(result, run_dir)
    if failed_on:
        kinds = ", ".join(f"{g} ({found[g + '_total']})" for g in failed_on)
        print(f"error: fail_on: found {kinds}; listed in "
              f"{run_dir / 'issues.csv'}.", file=sys.stderr)
    return result


def _settings(spec: CheckSpec) -> dict[str, Any]:
    return {"labels": spec.labels, "folds": spec.folds, "near_distance": spec.near_distance,
            "near_similarity": spec.near_similarity, "crop": spec.crop, "seed": spec.seed}


def _show(result: dict[str, Any], run_dir: Path) -> None:
    splits = list(result["splits"])
    out.show(out.table(f"Images of {result['dataset']} (imbalance ratio {result['imbalance_ratio']})",
                       ["class", *splits, "total"],
                       [[r["class"], *(r[s] for s in splits), r["total"]] for r in result["per_class"]]))
    found = result["findings"]
    out.show(out.table("Findings", ["kind", "count"], [[k, found[k]] for k in F.KINDS]))
    extra = ", clean.csv" if "clean_images" in result else ""
    log.info(f"{result['readable']} of {result['images']} images read in {result['read_seconds']} s, duplicates "
             f"in {result['duplicates_seconds']} s; wrote {run_dir / 'check.json'}, issues.csv, report.html{extra}")
