"""The machine a benchmark ran on, for the line each benchmark prints above its table."""
from __future__ import annotations

import contextlib
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what platform knows."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), name)
    return name
