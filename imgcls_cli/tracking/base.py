"""What a tracking backend is: the RunInfo it starts from and the Tracker methods the engine calls (each a no-op
here, the `none` backend), with the helpers the backends share."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class RunInfo:
    """What a backend learns of the run when it starts."""

    run_dir: Path
    config: dict[str, Any]  # the resolved config (config.yaml's)
    command: str | None
    resumed: bool
    model: str
    dataset: str
    hparams: tuple[str, ...] = ()  # the keys the command line set (a sweep's varying ones among them)
    settings: Any = None  # the TrackingSpec
    git_commit: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Tracker:
    """A backend: every method may raise; Tracking turns a failure into one warning line."""

    name = "none"
    wants_steps = False  # log_step is called only when some backend wants it (it costs a device sync a step)

    def __init__(self, info: RunInfo) -> None:
        self.info = info

    def log_step(self, step: int, values: Mapping[str, float]) -> None:
        """Per optimizer step: train/loss and train/lr."""

    def log_epoch(self, epoch: int, row: Mapping[str, Any]) -> None:
        """An epoch's metrics.csv row."""

    def end(self, status: str, summary: Mapping[str, Any], test: Mapping[str, Any]) -> None:
        """The run ended with this status; summary.json's content and the test split's metrics."""

    @staticmethod
    def sweep_start(settings: Any, sweep_dir: Path, command: str | None) -> None:
        """A sweep (imgcls train -m) begins: before its first job."""

    @staticmethod
    def sweep_end(settings: Any, sweep_dir: Path, failed: int) -> None:
        """Every job of the sweep has run; summary.csv and compare.png are written."""


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optimizer": {"lr": 0.1}} -> {"optimizer.lr": 0.1}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The entries that are numbers (not booleans, not None)."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}
