"""`imgcls <command> ...`: pops the command word and hands the rest of argv to that command's Hydra app."""
from __future__ import annotations

import difflib
import errno
import importlib
import os
import re
import shlex
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Callable

from imgcls_cli import __version__
from imgcls_cli.errors import UserError, shown

COMMANDS = {
    "train": "train a model; writes outputs/train/<time>_<model>_<dataset>/",
    "eval": "evaluate a checkpoint: imgcls eval checkpoint=PATH [dataset=... split=test]",
    "predict": "predict image files: imgcls predict checkpoint=PATH inputs=FILE|FOLDER|GLOB",
    "export": "a checkpoint as ONNX or .pt2, verified: imgcls export checkpoint=PATH format=onnx|torch_export|all",
    "explain": "heat maps of the evidence: imgcls explain checkpoint=PATH inputs=FILE|FOLDER|GLOB [target=...]",
    "lr_find": "the learning-rate range test; prints a suggested optimizer.lr: imgcls lr_find [train's groups/keys]",
    "check": "a dataset's duplicates, leakage, unreadable files and label errors: imgcls check dataset=... [labels=true]",
    "report": "write a run's report.html again: imgcls report RUN_OR_SWEEP_DIR",
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
  imgcls export checkpoint=outputs/train/<run>/checkpoints/best.pt format=onnx
  imgcls explain checkpoint=outputs/train/<run>/checkpoints/best.pt inputs=photos/
  imgcls lr_find model=resnet optimizer=sgd      # a suggested optimizer.lr for this model and data
  imgcls check dataset=imagefolder dataset.root=photos/ labels=true
  imgcls report outputs/train/<run>              # its report.html, written again
  imgcls train --help                            # config groups, options and keys
"""
# Config options that Hydra's launcher and sweeper plugins bring (the `cluster` extra).
PLUGIN_OPTIONS = {"hydra/launcher/joblib", "hydra/launcher/submitit_slurm", "hydra/launcher/submitit_local",
                  "hydra/launcher/slurm", "hydra/sweeper/optuna"}


def _usage() -> str:
    return USAGE.format(commands="\n".join(f"  {name:<9}{text}" for name, text in COMMANDS.items()))


def fail(message: str) -> int:
    from imgcls_cli.engine.distributed import quiet_rank

    if not quiet_rank():  # in data-parallel training rank 0 reports for every rank
        print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The command as typed, for summary.json: also in jobs a launcher runs in other processes (joblib, SLURM).
    os.environ["IMGCLS_COMMAND"] = shlex.join(["imgcls", *argv])
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
    if command == "report":
        from imgcls_cli.report.rebuild import report_command

        return _guard(lambda: report_command(rest))
    return _run_hydra(command, rest)


def _run_hydra(command: str, rest: list[str]) -> int:
    # Exceptions must reach us unformatted, so that a user's mistake becomes one line and exit status 2.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # a corrupt input is reported once, by us
    from imgcls_cli.commands.overrides import check_command_line

    main_fn = importlib.import_module(f"imgcls_cli.commands.{command}").main
    scratch = None
    if command == "train":
        from imgcls_cli.commands.resume import resume_args
        from imgcls_cli.engine import distributed

        try:
            rest = resume_args(rest)
            nproc = distributed.nproc_from(rest)
        except UserError as exc:
            return fail(str(exc))
    # Every key the command line sets exists (before data-parallel processes start or a sweep's first job runs).
    status = _guard(lambda: check_command_line(command, rest))
    if status:
        return status
    if command == "train":
        sweep = "-m" in rest or "--multirun" in rest
        if (nproc > 1 or distributed.is_worker()) and sweep:
            return fail("data-parallel training runs one training run; it does not combine with -m (a sweep).")
        if nproc > 1 and not distributed.is_worker() and not {"--help", "-h", "--cfg", "-c", "--info"} & set(rest):
            return distributed.launch(nproc, ["train", *rest])
        if distributed.quiet_rank():  # ranks > 0: nothing printed, nothing written but a scratch Hydra folder
            scratch = tempfile.mkdtemp(prefix="imgcls-rank")
            rest = [a for a in rest if not a.startswith("hydra.run.dir=")]
            rest += [f"hydra.run.dir={scratch}", "hydra.output_subdir=null", "hydra/job_logging=disabled",
                     "hydra/hydra_logging=disabled"]
            sys.stdout = open(os.devnull, "w")
    sys.argv = [f"imgcls-{command}", *rest]

    def app() -> object:
        from hydra.errors import ConfigCompositionException

        from imgcls_cli.commands.overrides import unknown_key_message
        from imgcls_cli.commands.sweep import SweepFailed

        try:
            return main_fn()
        except SweepFailed as exc:  # the summary table is printed: the jobs that failed, and exit status 1
            print(f"error: {exc}", file=sys.stderr)
            return exc.code
        except ConfigCompositionException as exc:  # Hydra's "Could not override 'epoch'": say what is close
            message = unknown_key_message(command, rest, exc)
            if message is None:
                raise
            raise UserError(message) from None

    try:
        status = _guard(app)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
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
    except ValueError as exc:  # Hydra's refusal of its flags' combination (--cfg with -m, --resolve alone)
        frames = traceback.extract_tb(exc.__traceback__)
        if not frames or Path(frames[-1].filename).parts[-3:] != ("hydra", "_internal", "utils.py"):
            raise
        return fail(_one_line(str(exc)))
    except OSError as exc:  # a name from the command line that no file system takes (Hydra's config search too)
        if exc.errno != errno.ENAMETOOLONG:
            raise
        return fail(f"a file name is too long for the file system: {shown(str(exc.filename or ''))}; "
                    "shorten the option that names it.")
    except Exception as exc:  # a launcher's or sweeper's own error: no "srun" here, no Optuna trial completed
        if not any("hydra_plugins" in frame.filename for frame in traceback.extract_tb(exc.__traceback__)):
            raise
        return fail(_one_line(str(exc)))
    return result if isinstance(result, int) else 0


def _missing_config_message(exc: Exception) -> str:
    missing = getattr(exc, "missing_cfg_file", None) or ""
    options = list(getattr(exc, "options", None) or [])
    match = re.search(r"Could not (?:find|load) '([^']+)'", str(exc))
    target = match.group(1) if match else missing
    if target.lstrip("/") in PLUGIN_OPTIONS:
        group, name = target.lstrip("/").rsplit("/", 1)
        return f"{group} '{name}' comes with a Hydra plugin that is not installed: pip install 'imgcls[cluster]'."
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
