"""The end of `imgcls eval`: run_info.json (what was evaluated, where and with what: what `imgcls report` rebuilds
the page from) and report.html, written after every other file of the eval directory."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from imgcls_cli.engine.ensemble import Scored
from imgcls_cli.report.page import write_report_safely
from imgcls_cli.report.thumbs import ImageSource, SplitImages
from imgcls_cli.rundir import git_commit, versions, write_json
from imgcls_cli.specs.eval import EvalSpec

log = logging.getLogger("imgcls")
RUN_INFO = "run_info.json"


def thumbnail_source(scored: Scored) -> ImageSource | None:
    """The scored images' pixels, as explain=N reads them: the split in memory, or its store."""
    if scored.images is not None:
        return SplitImages(scored.ids, np.asarray(scored.images))
    return SplitImages(scored.ids, scored.pixels) if scored.store is not None else None


def finish_eval(run_dir: Path, spec: EvalSpec, members: Sequence[Scored], device: Any, precision: str,
                started: float, command: str | None) -> None:
    """run_info.json, then report.html (a report that cannot be built is one warning line)."""
    first = members[0]
    info = {"command": command, "model": first.ckpt.get("model", {}).get("name"), "dataset": first.name,
            "split": spec.split, "checkpoint": first.checkpoint if len(members) == 1 else None,
            "checkpoints": [m.checkpoint for m in members] if len(members) > 1 else None,
            "ensemble": spec.ensemble if len(members) > 1 else None, "tta": spec.tta,
            "dataset_config": first.dataset_config, "seed": first.ckpt.get("config", {}).get("seed", 0),
            "device": str(device), "precision": precision, "versions": versions(), "git_commit": git_commit(),
            "wall_seconds": round(time.perf_counter() - started, 3)}
    write_json(run_dir / RUN_INFO, {k: v for k, v in info.items() if v is not None})
    write_report_safely(run_dir, thumbnail_source(first), log)
