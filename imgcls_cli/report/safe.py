"""A report is never worth a run: writing one that fails is one warning line, and nothing else changes."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable


def write_safely(write: Callable[[], Path], name: str, log: logging.Logger) -> Path | None:
    """write() (which writes its file whole, or not at all); any failure is logged as one warning line."""
    try:
        return write()
    except Exception as exc:  # noqa: BLE001 - the run's own status and files stay as they are
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning(f"{name} could not be written: {reason}")
        return None
