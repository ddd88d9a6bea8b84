"""The one rule for counting cores and choosing worker processes: training, eval, predict and decoding use it."""
from __future__ import annotations

import os
from typing import Any

from imgcls_cli.errors import as_int

MOST_WORKERS = 8  # more DataLoader workers than this only add memory and start-up time
FEW_ITEMS = 256  # below this many files, starting workers costs more than decoding them in the main process


def usable_cores() -> int:
    """The cores this process may use (a SLURM job's cpus_per_task, not the whole node's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_workers(setting: Any, *, items: int | None = None) -> int:
    """num_workers: auto (one per core but one for the main process, at most 8; none for fewer than 256 items when
    `items` is given) or a whole number >= 0."""
    if setting in (None, "auto"):
        if items is not None and items < FEW_ITEMS:
            return 0
        return max(1, min(MOST_WORKERS, usable_cores() - 1))
    return as_int(setting, "num_workers", minimum=0)
