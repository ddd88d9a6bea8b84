"""A sweep's summary rows, shared by the terminal table and summary.csv (commands/sweep.py) and by
sweep_report.html (report/sweep.py): the columns, the mean ± std row, and how a job is named and found."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

COLUMNS = ("job", "overrides", "status", "best_val_accuracy", "test_accuracy", "wall_seconds")


def mean_std_row(rows: list[dict[str, Any]]) -> list[Any] | None:
    """"mean ± std" of each number column over the completed jobs (a cross-validation's result), from two jobs on."""
    done = [r for r in rows if r["status"] == "completed"]
    if len(done) < 2:
        return None
    cells: list[Any] = ["", f"mean ± std of {len(done)} completed", ""]
    for column in COLUMNS[3:]:
        values = [float(r[column]) for r in done if r.get(column) not in (None, "")]
        cells.append(f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else "")
    return cells


def varying_overrides(rows: list[dict[str, Any]]) -> set[str]:
    """The overrides that differ between the jobs (all of them for a single job)."""
    seen = [set(r["overrides"].split(",")) for r in rows]
    return set().union(*seen) - set.intersection(*seen) if len(seen) > 1 else set().union(*seen)


def job_label(row: dict[str, Any], varying: set[str]) -> str:
    """A job named by its overrides that differ from the other jobs'."""
    return ",".join(o for o in row["overrides"].split(",") if o in varying) or f"job {row['job']}"


def job_dir(sweep_dir: Path, job: str) -> Path | None:
    """The folder of job number `job` (`<job>_<overrides>`), or None."""
    if not sweep_dir.is_dir():
        return None
    return next((p for p in sorted(sweep_dir.iterdir()) if p.is_dir() and p.name.startswith(f"{job}_")), None)
