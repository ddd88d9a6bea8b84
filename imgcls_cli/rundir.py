"""Files of a run directory: atomic JSON/CSV writes, metrics.csv rows, versions."""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                  "epoch_seconds", "images_per_second")


def write_text_atomic(path: str | Path, text: str | bytes) -> None:
    """Write beside path, then os.replace: the file on disk is the old one or the new one, never half of one.
    bytes are written as they are, text as UTF-8."""
    from imgcls_cli.errors import UserError

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            tmp.write_bytes(text)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp.exists():
            tmp.unlink()
        raise UserError(f"cannot write {path}: {exc.strerror or exc}; the previous file is intact.") from None


def write_json(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(v) for k, v in row.items()})
    write_text_atomic(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from imgcls_cli import __version__

    try:
        vision = version("torchvision")
    except PackageNotFoundError:
        vision = "not installed"
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": vision,
            "imgcls": __version__}


def git_commit() -> str | None:
    """The project's commit when run from a git checkout of imgcls, else None."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def command_line() -> str:
    """The command as the user typed it (the CLI keeps it before handing argv to Hydra, in IMGCLS_COMMAND for the
    jobs a launcher runs in other processes)."""
    from imgcls_cli.cli import original_argv

    if os.environ.get("IMGCLS_COMMAND"):
        return os.environ["IMGCLS_COMMAND"]
    return shlex.join(["imgcls", *(original_argv or sys.argv[1:])])
