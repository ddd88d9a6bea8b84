"""The machine a benchmark ran on, for the line each benchmark prints above its table."""
from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what platform knows."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), name)
    return name


def auto_settings():
    """(device, precision, channels_last, memory format) as imgcls picks them with its defaults (all `auto`)."""
    import torch

    from imgcls_cli.engine.device import resolve_device, resolve_precision, use_channels_last

    device = resolve_device("auto")
    channels_last = use_channels_last("auto", device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return device, resolve_precision("auto", device), channels_last, fmt


def imgcls_train(args: list[str], cwd: Path | None = None, run_dir: Path | None = None) -> tuple[dict | None, float]:
    """Run `imgcls train ARGS` as a user does (output hidden; a failure raises): (its summary.json when run_dir
    is given, the command's wall seconds)."""
    start = time.perf_counter()
    extra = [f"hydra.run.dir={run_dir}"] if run_dir is not None else []
    subprocess.run([sys.executable, "-m", "imgcls_cli", "train", *args, *extra], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    return (json.loads((run_dir / "summary.json").read_text()) if run_dir is not None else None), wall
