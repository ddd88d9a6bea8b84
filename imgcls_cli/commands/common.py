"""What every command does around the engine: the run directory, config.yaml, the last line."""
from __future__ import annotations

import logging
import os
import re
import shlex
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from imgcls_cli.engine.distributed import quiet_rank
from imgcls_cli.errors import UserError
from imgcls_cli.rundir import write_text_atomic
from imgcls_cli.commands.runlock import release  # also registers the imgcls.unique resolver of the run directories

log = logging.getLogger("imgcls")


def safe_dirname(text: str) -> str:
    """A sweep job's folder name that can be pasted into an override: no '=', ',', brackets, quotes or '/'."""
    text = re.sub(r"[\[\]()'\"{}]", "", str(text))
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-")


OmegaConf.register_new_resolver("imgcls.dirname", safe_dirname, replace=True)


def plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain dicts and lists."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]


def require(cfg: DictConfig, *keys: str, usage: str) -> None:
    for key in keys:
        if OmegaConf.is_missing(cfg, key):
            raise UserError(f"{key}= is required: {usage}")


def task_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task)


def command_line() -> str:
    """The command as the user typed it, for summary.json: the CLI keeps it in IMGCLS_COMMAND before handing argv
    to Hydra (also for the jobs a launcher runs in other processes); the engine is given it, never looks it up."""
    return os.environ.get("IMGCLS_COMMAND") or shlex.join(["imgcls", *sys.argv[1:]])


def run_command(cfg: DictConfig, body: Callable[[dict[str, Any], Path], Any],
                check: Callable[[DictConfig], None] | None = None) -> Any:
    """Run body(config, run_dir) and print the run directory last; in a sweep a failing job is a failed row.

    The run directory was locked before Hydra wrote into it (imgcls_cli.commands.runlock.RunDirGuard); the lock is let go
    once the run has ended, whichever way it ended."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        return _run(cfg, body, check, hc, run_dir, multirun)
    finally:
        release(run_dir)


def _run(cfg: DictConfig, body: Callable[[dict[str, Any], Path], Any], check: Callable[[DictConfig], None] | None,
         hc: Any, run_dir: Path, multirun: bool) -> Any:
    try:
        if check is not None:
            check(cfg)
        write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        result = body(plain(cfg), run_dir)
    except UserError as exc:
        if not multirun:
            # SystemExit passes Hydra's job runner untouched: one line, status 2, nothing else printed (by rank 0
            # alone in data-parallel training: every rank meets the same mistake).
            if not quiet_rank():
                print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        _job_failed(hc, str(exc))
        result = None
    except Exception as exc:  # a sweep survives a job's crash; the traceback goes to the job's log
        if not multirun:
            raise
        logging.getLogger("imgcls.file").error(traceback.format_exc())
        _job_failed(hc, f"{type(exc).__name__}: {exc}")
        result = None
    print(f"Run directory: {run_dir}", flush=True)
    return result


def _job_failed(hc: Any, message: str) -> None:
    logging.getLogger("imgcls.file").error(f"job failed: {message}")
    print(f"error: job {hc.job.num} ({','.join(hc.overrides.task)}) failed: {message}", file=sys.stderr)
