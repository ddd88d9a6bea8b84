"""Terminal output: rich progress bars on a terminal, plain lines otherwise, and result tables."""
from __future__ import annotations

import io
import logging
import sys
from typing import Any, Sequence

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
    """A transient per-epoch bar (loss, accuracy, images/s, ETA) when stdout is a terminal; silent otherwise."""

    def __init__(self, description: str, total: int) -> None:
        self.enabled = sys.stdout.isatty()
        self.progress = None
        if self.enabled:
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.2%} {task.fields[ips]:.0f} img/s"),
                TimeRemainingColumn(), console=console(), transient=True,
            )
            self.task = self.progress.add_task(description, total=total, loss=0.0, acc=0.0, ips=0.0)

    def __enter__(self) -> "EpochProgress":
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, images: int, loss: float, acc: float) -> None:
        if self.progress is None:
            return
        task = self.progress.tasks[0]
        ips = (task.completed + images) / max(task.elapsed or 1e-9, 1e-9)
        self.progress.update(self.task, advance=images, loss=loss, acc=acc, ips=ips)


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
