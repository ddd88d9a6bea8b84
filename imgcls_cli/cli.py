"""`imgcls <command> ...`: pops the command word and hands the rest of argv to that command's Hydra app."""
from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
from typing import Callable

from imgcls_cli import __version__
from imgcls_cli.errors import UserError

COMMANDS = {
    "train": "train a model; writes outputs/train/<time>_<model>_<dataset>/",
    "eval": "evaluate a checkpoint: imgcls eval checkpoint=PATH [dataset=... split=test]",
    "predict": "predict image files: imgcls predict checkpoint=PATH inputs=FILE|FOLDER|GLOB",
    "list": "list what a registry holds: imgcls list [models|datasets|augments|optimizers|schedules]",
}
USAGE = """usage: imgcls <command> [group=option ...] [key=value ...] [-m] [--cfg job] [--help]

commands:
{commands}

examples:
  imgcls train                                   # simple_cnn on the built-in digits
  imgcls train model=resnet schedule=cosine epochs=5
  imgcls train -m schedule=step,cosine           # a sweep with one summary table
  imgcls eval checkpoint=outputs/train/<run>/checkpoints/best.pt
  imgcls predict checkpoint=outputs/train/<run>/checkpoints/best.pt inputs=photos/
  imgcls train --help                            # config groups, options and keys
"""
original_argv: list[str] = []


def _usage() -> str:
    return USAGE.format(commands="\n".join(f"  {name:<9}{text}" for name, text in COMMANDS.items()))


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    original_argv[:] = argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"imgcls {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        return fail(f"unknown command '{command}'.{hint} Choices: {', '.join(COMMANDS)}.")
    if command == "list":
        from imgcls_cli.listing import list_command

        return _guard(lambda: list_command(rest))
    return _run_hydra(command, rest)


def _run_hydra(command: str, rest: list[str]) -> int:
    # Exceptions must reach us unformatted, so that a user's mistake becomes one line and exit status 2.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # a corrupt input is reported once, by us
    app = importlib.import_module(f"imgcls_cli.commands.{command}").main
    if command == "train":
        from imgcls_cli.commands.resume import resume_args

        try:
            rest = resume_args(rest)
        except UserError as exc:
            return fail(str(exc))
    sys.argv = [f"imgcls-{command}", *rest]
    status = _guard(app)
    if status == 0 and command == "train":
        from imgcls_cli.commands.sweep import failed_jobs

        if failed_jobs:
            print(f"error: {len(failed_jobs)} sweep job(s) failed: {', '.join(failed_jobs)}", file=sys.stderr)
            return 1
    return status


def _guard(fn: Callable[[], object]) -> int:
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    try:
        result = fn()
    except UserError as exc:
        return fail(str(exc))
    except MissingConfigException as exc:
        return fail(_missing_config_message(exc))
    except (HydraException, OmegaConfBaseException) as exc:
        return fail(_one_line(str(exc)))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


def _missing_config_message(exc: Exception) -> str:
    missing = getattr(exc, "missing_cfg_file", None) or ""
    options = list(getattr(exc, "options", None) or [])
    match = re.search(r"Could not (?:find|load) '([^']+)'", str(exc))
    target = match.group(1) if match else missing
    if "/" in target and options:
        group, name = target.rsplit("/", 1)
        close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        return f"unknown {group} '{name}'.{hint} Choices: {', '.join(sorted(options))}."
    return _one_line(str(exc))


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("full_key:", "object_type=", "Config search path"))]
    return " ".join(lines[:3]) if lines else "invalid configuration"


if __name__ == "__main__":
    raise SystemExit(main())
