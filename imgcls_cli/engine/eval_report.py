"""The end of `imgcls eval`: run_info.json (what was evaluated, where and with what: what `imgcls report` rebuilds
the page from) and report.html, written after every other file of the eval directory."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

from imgcls_cli.engine.ensemble import Scored
from imgcls_cli.report.page import write_report_safely
from imgcls_cli.report.thumbs import FileImages, ImageSource, SplitImages
from imgcls_cli.rundir import git_commit, versions, write_json
from imgcls_cli.specs.eval import EvalSpec

log = logging.getLogger("imgcls")
RUN_INFO = "run_info.json"


def thumbnail_source(scored: Scored) -> ImageSource | None:
    """The scored images' pixels: the split in memory, else its files (keys are their real paths)."""
    if scored.images is not None:
        return SplitImages(scored.ids, scored.images)
    if scored.id_column == "path" and scored.keys:
        return FileImages({i: Path(k) for i, k in zip(scored.ids, scored.keys)})
    return None


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
