"""The tracking backends' registry and the one object the engine talks to.

The engine calls Tracking at four points: start, each optimizer step (when a backend wants steps), each epoch's
metrics row, and the end (status, summary, test metrics). A backend that fails is one warning line and is dropped
for the rest of the run: tracking never fails or changes a training run.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from imgcls_cli.registry import Registry
from imgcls_cli.tracking.base import RunInfo, Tracker

log = logging.getLogger("imgcls")


BACKENDS: Registry[Callable[..., type[Tracker]]] = Registry("tracking backend")


@BACKENDS.register("none")
def _none() -> type[Tracker]:
    return Tracker


@BACKENDS.register("mlflow")
def _mlflow() -> type[Tracker]:
    from imgcls_cli.tracking.mlflow_backend import MlflowTracker

    return MlflowTracker


@BACKENDS.register("tensorboard")
def _tensorboard() -> type[Tracker]:
    from imgcls_cli.tracking.tensorboard_backend import TensorBoardTracker

    return TensorBoardTracker


def warn(backend: str, exc: BaseException) -> None:
    """The one line a failing backend costs."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    log.warning(f"tracking: {backend} failed ({text[:300]}); the run goes on without it")


class Tracking:
    """The run's trackers, each called in turn; one that raises is reported once and dropped."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    @classmethod
    def open(cls, info: RunInfo) -> Tracking:
        trackers = []
        for name in getattr(info.settings, "backends", ()):
            try:
                trackers.append(BACKENDS.get(name)()(info))
            except Exception as exc:  # noqa: BLE001 - a tracker never stops the run
                warn(name, exc)
        return cls(trackers)

    @property
    def wants_steps(self) -> bool:
        return any(t.wants_steps for t in self.trackers)

    def _each(self) -> Iterator[Tracker]:
        yield from list(self.trackers)

    def _call(self, method: str, *args: Any) -> None:
        for tracker in self._each():
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:  # noqa: BLE001 - a tracker never stops the run
                warn(tracker.name, exc)
                self.trackers.remove(tracker)

    def log_step(self, step: int, values: Mapping[str, float]) -> None:
        self._call("log_step", step, values)

    def log_epoch(self, epoch: int, row: Mapping[str, Any]) -> None:
        self._call("log_epoch", epoch, row)

    def end(self, status: str, summary: Mapping[str, Any], test: Mapping[str, Any] | None = None) -> None:
        self._call("end", status, summary, test or {})
        self.trackers = []


def sweep_event(event: str, settings: Any, sweep_dir: Path, *args: Any) -> None:
    """sweep_start/sweep_end for each backend of the settings, each failure one warning line."""
    for name in getattr(settings, "backends", ()):
        try:
            getattr(BACKENDS.get(name)(), event)(settings, sweep_dir, *args)
        except Exception as exc:  # noqa: BLE001 - a tracker never stops the sweep
            warn(name, exc)
