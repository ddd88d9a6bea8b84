"""Checkpoints: plain dicts of tensors and containers, written atomically, read with weights_only=True."""
from __future__ import annotations

import contextlib
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from imgcls_cli.errors import UserError

FORMAT = "imgcls-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("model", "state_dict", "classes", "input", "config")


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """Write to a temporary file beside `path`, then os.replace: a checkpoint on disk is always whole."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write checkpoint {path}: {exc.strerror or exc}; the previous file is intact.") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check an imgcls checkpoint; anything else is refused with one line, nothing in it executed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if re.search(r"Unsupported global|GLOBAL|Unsupported class|unsupported .*REDUCE", str(exc), re.I):
            raise UserError(f"{path} holds pickled Python objects, not an imgcls checkpoint; "
                            "refusing to load it (nothing in it was run).") from None
        raise UserError(f"{path} is not an imgcls checkpoint (not a PyTorch checkpoint file); nothing in it was run.") from None
    except Exception as exc:  # any failure to read the file means it is not a whole checkpoint
        detail = ""
        if isinstance(exc, (RuntimeError, OSError)) and str(exc):
            detail = ": " + re.split(r"(?<=[.:])\s", str(exc).strip())[0].rstrip(".:")
        raise UserError(f"{path} is not a readable imgcls checkpoint (truncated, damaged or not a checkpoint"
                        f"{detail}).") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not an imgcls checkpoint (no '{FORMAT}' format marker).")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} has checkpoint format version {ckpt.get('format_version')}; "
                        f"this imgcls reads version {FORMAT_VERSION}.")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise UserError(f"{path} is an incomplete imgcls checkpoint (missing {', '.join(missing)}).")
    return ckpt
