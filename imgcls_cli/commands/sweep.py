"""The sweep summary: a Hydra callback that gathers every job's summary.json when a multirun ends."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from imgcls_cli import console as out
from imgcls_cli.commands.runlock import release
from imgcls_cli.rundir import write_csv

COLUMNS = ("job", "overrides", "status", "best_val_accuracy", "test_accuracy", "wall_seconds")


class SweepFailed(SystemExit):
    """A sweep with failed jobs ends with exit status 1. A SystemExit, because Hydra turns a callback's Exceptions
    into warnings; the CLI catches it to name the jobs (str() is its error line)."""

    def __init__(self, jobs: list[str]) -> None:
        super().__init__(1)
        self.jobs = jobs

    def __str__(self) -> str:
        return f"{len(self.jobs)} sweep job(s) failed: {', '.join(self.jobs)}"


def _job_number(path: Path) -> tuple[int, str]:
    head = path.name.split("_", 1)[0]
    return (int(head), path.name) if head.isdigit() else (1 << 30, path.name)


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder (those holding .hydra/overrides.yaml), in job order."""
    import json

    rows = []
    for job_dir in sorted((p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")), key=_job_number):
        overrides = OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")
        row: dict[str, Any] = {"job": job_dir.name.split("_", 1)[0], "overrides": ",".join(overrides),
                               "status": "failed"}
        summary_file = job_dir / "summary.json"
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text())
            row.update({k: summary.get(k) for k in COLUMNS[2:]})
        rows.append(row)
    return rows


def mean_std_row(rows: list[dict[str, Any]]) -> list[Any] | None:
    """"mean ± std" of each number column over the completed jobs (a cross-validation's result), from two jobs on."""
    done = [r for r in rows if r["status"] == "completed"]
    if len(done) < 2:
        return None
    cells: list[Any] = ["", f"mean ± std of {len(done)} completed", ""]
    for column in COLUMNS[3:]:
        values = [float(r[column]) for r in done if r.get(column) is not None]
        cells.append(f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else "")
    return cells


def write_compare(sweep_dir: Path, rows: list[dict[str, Any]]) -> None:
    """compare.png: every job that recorded epochs, labelled by its overrides (those that differ between jobs)."""
    from imgcls_cli.plots import plot_compare
    from imgcls_cli.rundir import read_csv

    varying = _varying_overrides(rows)
    jobs = []
    for row in rows:
        metrics = next(sweep_dir.glob(f"{row['job']}_*/metrics.csv"), None)
        if metrics is None:
            continue
        label = ",".join(o for o in row["overrides"].split(",") if o in varying) or f"job {row['job']}"
        jobs.append((label, read_csv(metrics), row.get("test_accuracy")))
    if jobs:
        plot_compare(jobs, sweep_dir / "compare.png")


def _varying_overrides(rows: list[dict[str, Any]]) -> set[str]:
    seen = [set(r["overrides"].split(",")) for r in rows]
    return set().union(*seen) - set.intersection(*seen) if len(seen) > 1 else set().union(*seen)


class SweepSummary(Callback):
    """Writes <sweep dir>/summary.csv and prints it as a table once every job has run; raises SweepFailed when a
    job did not complete."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = collect(sweep_dir)
        write_csv(sweep_dir / "summary.csv", rows, COLUMNS)
        failed = [r["job"] for r in rows if r["status"] != "completed"]
        write_compare(sweep_dir, rows)
        from imgcls_cli.report.sweep import write_sweep_report_safely  # here: other commands need not load it

        write_sweep_report_safely(sweep_dir)
        table = [[r.get(c) for c in COLUMNS] for r in rows]
        if spread := mean_std_row(rows):
            table.append(spread)
        # The terminal only: this process's log file is a job's (the last one's) or, when the jobs ran in
        # worker processes (joblib, submitit), none, and Hydra's own logger would print the table a second time.
        out.console().print(out.table(f"Sweep: {len(rows)} jobs, {len(failed)} failed", COLUMNS, table))
        print(f"Run directory: {sweep_dir}", flush=True)
        if failed:
            # Hydra calls on_multirun_end in reverse order: RunDirGuard's, which lets go of the sweep directory,
            # comes after this one and does not run once this raises.
            release(sweep_dir)
            raise SweepFailed(failed)
