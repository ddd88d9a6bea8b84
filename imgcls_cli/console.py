"""Terminal output: rich progress bars on a terminal, plain lines otherwise, and result tables."""
from __future__ import annotations

import io
import logging
import sys
import time
from typing import Any, Callable, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

log = logging.getLogger("imgcls")
file_log = logging.getLogger("imgcls.file")  # the run's log file only (configured by the commands)


def console() -> Console:
    # Rich assumes 80 columns when stdout is not a terminal; logs and pipes read better wider.
    width = None if sys.stdout.isatty() else 160
    return Console(file=sys.stdout, highlight=False, width=width)


class EpochProgress:
    """A transient per-epoch bar (loss, accuracy, images/s, ETA) when stdout is a terminal; silent otherwise.

    The training loop asks due() after each batch and reads its loss and accuracy (a device sync) only then: at
    the first batch, and then once `interval` seconds of wall time have passed, whatever the time a step takes.
    Before the first batch the bar shows no numbers (not zeros).
    """

    def __init__(self, description: str, total: int, *, interval: float = 0.5,
                 clock: Callable[[], float] = time.monotonic, output: Console | None = None) -> None:
        self.enabled = output is not None or sys.stdout.isatty()
        self.progress = None
        self.interval, self.clock = interval, clock
        self.started, self.last, self.images = clock(), None, 0
        if self.enabled:
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                TimeRemainingColumn(), console=output or console(), transient=True,
            )
            self.task = self.progress.add_task(description, total=total, stats="")

    def __enter__(self) -> "EpochProgress":
        if self.progress is not None:
            self.started = self.clock()
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def due(self) -> bool:
        """Whether the numbers are to be shown now: after the first batch, then every `interval` seconds."""
        return self.progress is not None and (self.last is None or self.clock() - self.last >= self.interval)

    def update(self, images: int, loss: float, acc: float) -> None:
        """`images` more done; the epoch's running loss and accuracy."""
        if self.progress is None:
            return
        self.last = now = self.clock()
        self.images += images
        ips = self.images / max(now - self.started, 1e-9)
        self.progress.update(self.task, advance=images, stats=stats_text(loss, acc, ips))

    def text(self) -> str:
        """The bar's numbers as shown now ("" before the first batch)."""
        return self.progress.tasks[0].fields["stats"] if self.progress is not None else ""


def stats_text(loss: float, acc: float, ips: float) -> str:
    return f"loss {loss:.4f} acc {acc:.2%} {ips:.0f} img/s"


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        t.add_column(str(col), justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*[fmt(v) for v in row])
    return t


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def show(t: Table) -> None:
    """Print a table to the terminal and its plain text to the run's log file."""
    console().print(t)
    recorder = Console(record=True, file=io.StringIO(), width=120)
    recorder.print(t)
    file_log.info("\n" + recorder.export_text())
