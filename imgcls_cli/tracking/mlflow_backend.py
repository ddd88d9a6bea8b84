"""tracking=mlflow: one MLflow run per imgcls run (a sweep's jobs are child runs of the sweep's run).

The run's id is kept in <run dir>/mlflow.json (<sweep dir>/mlflow.json for a sweep), so that resume= continues the
same MLflow run. Without tracking.uri the store is local: outputs/mlflow/mlflow.db (SQLite) beside
outputs/mlflow/artifacts/, which `mlflow ui --backend-store-uri sqlite:///outputs/mlflow/mlflow.db` shows.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Mapping

from imgcls_cli.rundir import write_json
from imgcls_cli.tracking.base import RunInfo, Tracker, flatten, numbers

LOCAL_STORE = Path("outputs") / "mlflow"
ID_FILE = "mlflow.json"
BATCH = 100  # MLflow takes at most 100 params (and 1000 metrics) a log_batch call
MAX_PARAM_CHARS = 6000
STATUS = {"completed": "FINISHED", "failed": "FAILED", "diverged": "FAILED", "interrupted": "KILLED"}
# What a dead tracking server costs before the run goes on without it (MLflow's own defaults retry for minutes);
# a value set in the environment wins.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
RUN_FILES = ("config.yaml", "summary.json", "metrics.csv", "report.html", "train.log")
RUN_FOLDERS = ("eval", "plots")
SWEEP_FILES = ("summary.csv", "compare.png", "sweep_report.html")


def store_uri(settings: Any) -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment): tracking.uri, or the local SQLite store."""
    if settings.uri:
        return settings.uri, None
    root = LOCAL_STORE.resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


def client(settings: Any) -> tuple[Any, str, str | None]:
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    for name in ("mlflow", "alembic"):  # their INFO lines (database set-up) are not the run's
        logging.getLogger(name).setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    uri, artifacts = store_uri(settings)
    return MlflowClient(tracking_uri=uri), uri, artifacts


def experiment_id(mlflow: Any, name: str, artifacts: str | None) -> str:
    found = mlflow.get_experiment_by_name(name)
    return found.experiment_id if found is not None else mlflow.create_experiment(name, artifact_location=artifacts)


def read_id(folder: Path, uri: str) -> str | None:
    """The MLflow run id recorded in folder (for this tracking URI), or None."""
    try:
        saved = json.loads((folder / ID_FILE).read_text())
    except (OSError, ValueError):
        return None
    return saved.get("run_id") if saved.get("tracking_uri") == uri else None


def _key(name: str) -> str:
    return re.sub(r"[^\w\-. /]", "_", name)[:250]


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, info: RunInfo) -> None:
        super().__init__(info)
        self.mlflow, self.uri, artifacts = client(info.settings)
        run_id = read_id(info.run_dir, self.uri) if info.resumed else None
        if run_id is not None:
            self.mlflow.update_run(run_id, status="RUNNING")
            logged = set(self.mlflow.get_run(run_id).data.params)
        else:
            run_id, logged = self._create(artifacts), set()
        self.run_id = run_id
        params = {_key(k): str(v)[:MAX_PARAM_CHARS] for k, v in flatten(info.config).items()}
        self._params({k: v for k, v in params.items() if k not in logged})

    def _create(self, artifacts: str | None) -> str:
        from mlflow.entities import RunTag

        info, settings = self.info, self.info.settings
        parent = read_id(Path(settings.sweep_dir), self.uri) if settings.sweep_dir else None
        experiment = (self.mlflow.get_run(parent).info.experiment_id if parent
                      else experiment_id(self.mlflow, settings.experiment, artifacts))
        tags = {"model": info.model, "dataset": info.dataset, "status": "running", "command": info.command or "",
                "run_dir": str(info.run_dir.resolve()), "mlflow.runName": info.run_dir.name}
        if info.git_commit:
            tags.update({"git_commit": info.git_commit, "mlflow.source.git.commit": info.git_commit})
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = self.mlflow.create_run(experiment, run_name=info.run_dir.name)
        self.mlflow.log_batch(run.info.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        write_json(info.run_dir / ID_FILE, {"run_id": run.info.run_id, "tracking_uri": self.uri,
                                            "experiment_id": experiment})
        return run.info.run_id

    def _params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), BATCH):
            self.mlflow.log_batch(self.run_id, params=items[start:start + BATCH])

    def _metrics(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(_key(k), v, stamp, step) for k, v in values.items()]
        for start in range(0, len(metrics), 1000):
            self.mlflow.log_batch(self.run_id, metrics=metrics[start:start + 1000])

    def log_epoch(self, epoch: int, row: Mapping[str, Any]) -> None:
        self._metrics(numbers({k: v for k, v in row.items() if k != "epoch"}), epoch)

    def end(self, status: str, summary: Mapping[str, Any], test: Mapping[str, Any]) -> None:
        run_dir = self.info.run_dir
        ended = {**numbers({k: v for k, v in summary.items() if k != "seed"}),
                 **numbers({f"test_{k}": v for k, v in test.items()})}
        self._metrics(ended, int(summary.get("epochs_completed") or 0))
        self.mlflow.set_tag(self.run_id, "status", status)
        for name in RUN_FILES:
            if (run_dir / name).is_file():
                self.mlflow.log_artifact(self.run_id, str(run_dir / name))
        for name in RUN_FOLDERS:
            if (run_dir / name).is_dir():
                self.mlflow.log_artifacts(self.run_id, str(run_dir / name), artifact_path=name)
        best = run_dir / "checkpoints" / "best.pt"
        if self.info.settings.log_checkpoints and best.is_file():
            self.mlflow.log_artifact(self.run_id, str(best), artifact_path="checkpoints")
        self.mlflow.set_terminated(self.run_id, STATUS.get(status, "FAILED"))

    @staticmethod
    def sweep_start(settings: Any, sweep_dir: Path, command: str | None) -> None:
        from mlflow.entities import RunTag

        mlflow, uri, artifacts = client(settings)
        experiment = experiment_id(mlflow, settings.experiment, artifacts)
        run = mlflow.create_run(experiment, run_name=sweep_dir.name)
        tags = {"sweep": "true", "status": "running", "command": command or "", "run_dir": str(sweep_dir.resolve())}
        mlflow.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        write_json(sweep_dir / ID_FILE, {"run_id": run.info.run_id, "tracking_uri": uri,
                                         "experiment_id": experiment})

    @staticmethod
    def sweep_end(settings: Any, sweep_dir: Path, failed: int) -> None:
        mlflow, uri, _ = client(settings)
        run_id = read_id(sweep_dir, uri)
        if run_id is None:
            return
        for name in SWEEP_FILES:
            if (sweep_dir / name).is_file():
                mlflow.log_artifact(run_id, str(sweep_dir / name))
        mlflow.set_tag(run_id, "status", "failed" if failed else "completed")
        mlflow.set_terminated(run_id, "FAILED" if failed else "FINISHED")
