"""The sweep summary: a Hydra callback that gathers every job's summary.json when a multirun ends."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from imgcls_cli import console as out
from imgcls_cli.commands.runlock import release
from imgcls_cli.rundir import SWEEP_COLUMNS, write_csv

if TYPE_CHECKING:
    from imgcls_cli.sweep_plot import SweepJob

COLUMNS = SWEEP_COLUMNS
MULTILABEL_COLUMNS = ("best_val_map", "test_map")  # added where a job is task=multilabel


def columns_of(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """summary.csv's columns: SWEEP_COLUMNS, with the multilabel scores before wall_seconds where a job has them."""
    if not any(r.get("test_map") is not None or r.get("best_val_map") is not None for r in rows):
        return COLUMNS
    return (*COLUMNS[:-1], *MULTILABEL_COLUMNS, COLUMNS[-1])


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
            row.update({k: summary[k] for k in MULTILABEL_COLUMNS if k in summary})
        rows.append(row)
    return rows


def mean_std_row(rows: list[dict[str, Any]]) -> list[Any] | None:
    """"mean ± std" of each number column over the completed jobs (a cross-validation's result), from two jobs on."""
    done = [r for r in rows if r["status"] == "completed"]
    if len(done) < 2:
        return None
    cells: list[Any] = ["", f"mean ± std of {len(done)} completed", ""]
    for column in columns_of(rows)[3:]:
        values = [float(r[column]) for r in done if r.get(column) is not None]
        cells.append(f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else "")
    return cells


def write_compare(sweep_dir: Path, rows: list[dict[str, Any]]) -> None:
    """compare.png: every job that recorded epochs, by number, with a table of the overrides that differ between
    jobs."""
    from imgcls_cli.sweep_plot import plot_compare

    jobs = compare_jobs(sweep_dir, rows)
    if jobs:
        plot_compare(jobs, sweep_dir / "compare.png")


def compare_jobs(sweep_dir: Path, rows: list[dict[str, Any]]) -> list[SweepJob]:
    """A SweepJob per row (collect's) whose folder holds metrics.csv: its epochs, accuracies and varying overrides."""
    from imgcls_cli.rundir import read_csv
    from imgcls_cli.sweep_plot import SweepJob

    overrides = [override_values(row["overrides"]) for row in rows]
    varying = _varying_keys(overrides)
    jobs = []
    for row, values in zip(rows, overrides):
        metrics = next(sweep_dir.glob(f"{row['job']}_*/metrics.csv"), None)
        if metrics is not None:
            jobs.append(SweepJob(row["job"], read_csv(metrics), {k: values.get(k, "") for k in varying},
                                 row.get("best_val_accuracy"), row.get("test_accuracy")))
    return jobs


def override_values(overrides: str) -> dict[str, str]:
    """"a=1,b=[2,3]" -> {"a": "1", "b": "[2,3]"}: summary.csv's overrides cell split at its top-level commas."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(overrides):
        depth += (char in "[({") - (char in "])}")
        if char == "," and depth == 0:
            items.append(overrides[start:i])
            start = i + 1
    items.append(overrides[start:])
    return dict(item.partition("=")[::2] for item in items if item)


def _varying_keys(overrides: list[dict[str, str]]) -> list[str]:
    """The keys whose value differs between the jobs (every key of a single job), in the order first seen."""
    keys = list(dict.fromkeys(key for values in overrides for key in values))
    if len(overrides) < 2:
        return keys
    return [key for key in keys if len({values.get(key) for values in overrides}) > 1]


def tracking_settings(config: DictConfig) -> Any:
    """The sweep's TrackingSpec (tracking=, tensorboard=), or None when it is not a valid one (each job then says
    why)."""
    from imgcls_cli.errors import UserError
    from imgcls_cli.specs.tracking import TrackingSpec

    try:
        tracking = OmegaConf.to_container(config.tracking, resolve=True) if "tracking" in config else None
        return TrackingSpec.parse(tracking, config.get("tensorboard") is True)  # type: ignore[arg-type]
    except UserError:
        return None


class SweepSummary(Callback):
    """Writes <sweep dir>/summary.csv and prints it as a table once every job has run; raises SweepFailed when a
    job did not complete. With tracking=mlflow the sweep is a parent run, its jobs child runs."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from imgcls_cli.commands.common import command_line
        from imgcls_cli.tracking.api import sweep_event

        sweep_event("sweep_start", tracking_settings(config), Path(config.hydra.sweep.dir), command_line())

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = collect(sweep_dir)
        columns = columns_of(rows)
        write_csv(sweep_dir / "summary.csv", rows, columns)
        failed = [r["job"] for r in rows if r["status"] != "completed"]
        write_compare(sweep_dir, rows)
        from imgcls_cli.report.sweep import write_sweep_report_safely  # here: other commands need not load it

        write_sweep_report_safely(sweep_dir)
        from imgcls_cli.tracking.api import sweep_event

        sweep_event("sweep_end", tracking_settings(config), sweep_dir, len(failed))
        table = [[r.get(c) for c in columns] for r in rows]
        if spread := mean_std_row(rows):
            table.append(spread)
        # The terminal only: this process's log file is a job's (the last one's) or, when the jobs ran in
        # worker processes (joblib, submitit), none, and Hydra's own logger would print the table a second time.
        out.console().print(out.table(f"Sweep: {len(rows)} jobs, {len(failed)} failed", columns, table))
        print(f"Run directory: {sweep_dir}", flush=True)
        if failed:
            # Hydra calls on_multirun_end in reverse order: RunDirGuard's, which lets go of the sweep directory,
            # comes after this one and does not run once this raises.
            release(sweep_dir)
            raise SweepFailed(failed)
