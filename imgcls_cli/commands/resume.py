"""`imgcls train resume=auto|PATH`: which run directory to continue, chosen before Hydra makes a new one.

The run continues in its own directory: the command line gets `hydra.run.dir=<that run>`, so Hydra appends to its
train.log and the engine finds checkpoints/last.pt there.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from imgcls_cli.errors import UserError
from imgcls_cli.commands.runlock import in_use

UNFINISHED = {"running", "interrupted", "failed"}


def _key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def _settings(overrides: list[str]) -> list[str]:
    """The overrides that choose the config: not resume=, not hydra.*."""
    return sorted(o for o in overrides if _key(o) != "resume" and not _key(o).startswith("hydra."))


def newest_unfinished(root: Path, overrides: list[str]) -> Path | None:
    """The newest run under root with a last.pt, a status that is not finished, these same overrides, and no live
    process training it."""
    wanted = _settings(overrides)
    runs = sorted(root.glob("*/checkpoints/last.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for last in runs:
        run = last.parent.parent
        try:  # no summary.json: the process was killed before it could write one
            summary = run / "summary.json"
            status = json.loads(summary.read_text()).get("status") if summary.is_file() else "running"
            saved = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) or []
        except (OSError, ValueError, yaml.YAMLError):
            continue
        if status in UNFINISHED and _settings([str(o) for o in saved]) == wanted and not in_use(run):
            return run
    return None


def resume_args(rest: list[str]) -> list[str]:
    """rest with hydra.run.dir pointing at the run to continue, when it has resume=auto|PATH (and is no sweep)."""
    values = [a.split("=", 1)[1] for a in rest if _key(a) == "resume" and "=" in a]
    if not values or values[-1] in ("null", "None", "") or "-m" in rest or "--multirun" in rest:
        return rest
    value = values[-1]
    if value == "auto":
        run = newest_unfinished(Path("outputs/train"), [a for a in rest if not a.startswith("-")])
        if run is None:
            print("resume=auto: no unfinished run with these settings under outputs/train; starting a new run")
            return rest
        print(f"resume=auto: continuing {run}")
    else:
        path = Path(value).expanduser()
        run = path.parent.parent if path.is_file() else path
        if not (run / "checkpoints" / "last.pt").is_file():
            raise UserError(f"resume={value}: no checkpoints/last.pt in {run}; give a run directory or its last.pt.")
    return [a for a in rest if not _key(a) == "hydra.run.dir"] + [f"hydra.run.dir={run}"]
