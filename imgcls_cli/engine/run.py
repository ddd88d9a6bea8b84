"""One training run's bookkeeping: its settings, its run directory, summary.json, and how it stops."""
from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any

from imgcls_cli.engine import distributed
from imgcls_cli.errors import UserError
from imgcls_cli.rundir import write_json
from imgcls_cli.tracking.api import Tracking

log = logging.getLogger("imgcls")


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: last.pt was written where the run stopped."""

    def __init__(self, signum: int, epoch: int, step: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} in epoch {epoch} at step {step}")
        self.signum = signum


class Run:
    """The state of one training run and the files it writes into run_dir."""

    def __init__(self, cfg: dict[str, Any], run_dir: Path, explicit_keys: set[str] | None = None,
                 command: str | None = None) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.explicit_keys: set[str] = explicit_keys or set()  # the keys the user set on the command line
        self.started = time.perf_counter()
        self.stop_signal = 0  # SIGINT or SIGTERM once one arrived
        self.ctx = distributed.Dist()  # the data-parallel job this run is part of (a single process by default)
        self.main = not distributed.quiet_rank()  # rank 0 alone writes the run directory
        self.tracking = Tracking([])  # MLflow / TensorBoard, opened by run_training on rank 0
        self.summary: dict[str, Any] = {"status": "running", "best_epoch": None, "best_val_accuracy": None,
                                        "test_accuracy": None, "seed": cfg.get("seed"), "command": command}

    def write_summary(self, status: str | None = None, **extra: Any) -> dict[str, Any]:
        if status:
            self.summary["status"] = status
        self.summary.update(extra)
        self.summary["wall_seconds"] = round(time.perf_counter() - self.started, 3)
        if not self.main:
            return self.summary
        try:
            write_json(self.run_dir / "summary.json", self.summary)
        except UserError as exc:
            if status in (None, "running", "completed"):
                raise
            log.warning(str(exc))  # the run is ending anyway: its own error is the one to report
        return self.summary

    def check_stop(self, epoch: int, step: int) -> None:
        """A signal that arrived while the epoch was validated and saved: the run stops there."""
        if self.stop_signal:
            raise Interrupted(self.stop_signal, epoch, step)
