"""Files of a run directory: atomic JSON/CSV writes, metrics.csv rows, versions."""
from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import platform
import re
import stat
import subprocess
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Mapping, Sequence

METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                  "epoch_seconds", "images_per_second")


# Cells a spreadsheet would run as a formula (OWASP "CSV injection"); a text cell starting with one is written with a
# leading quote. Numbers written as text ("-0.5", "+3") are not formulas and stay as they are.
FORMULA_START = re.compile(r"^'*[=+\-@\t\r]")
_ESCAPED = re.compile(r"^'+[=+\-@\t\r]")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")

# summary.csv of a sweep folder, one row per job (commands/sweep.py writes it, the sweep report reads it)
SWEEP_COLUMNS = ("job", "overrides", "status", "best_val_accuracy", "test_accuracy", "wall_seconds")


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text: a string starting with =, +, -, @, tab or CR (after any quotes)
    gets a leading single quote; numbers, and strings that are plain numbers, are kept. read_csv undoes it."""
    if isinstance(value, str) and FORMULA_START.match(value) and not _NUMBER.match(value):
        return "'" + value
    return value


def unescape_cell(value: str) -> str:
    """The cell as it was before spreadsheet_safe."""
    return value[1:] if _ESCAPED.match(value) else value


class _RecordingFile(io.FileIO):
    """A file that writes all it is given or raises, and keeps the OSError: torch.save reports a failed write (a full
    disk) as a RuntimeError about stream positions, which says nothing to a user."""

    error: OSError | None = None

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                n = super().write(view[done:])
                if not n:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                done += n
        except OSError as exc:
            self.error = self.error or exc
            raise
        return done


FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
              (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def mode_kind(mode: int) -> str:
    """'' for a regular file, else what it is: 'a folder', 'a FIFO', 'a character device', ... (the one naming of
    files that are not regular, for writes, predict's inputs and decoding)."""
    if stat.S_ISREG(mode):
        return ""
    return next((name for test, name in FILE_KINDS if test(mode)), "a special file")


def file_kind(path: str | Path) -> str:
    """mode_kind of what path names (links followed), or 'missing' where it cannot be stat'ed."""
    try:
        return mode_kind(os.stat(path).st_mode)
    except OSError:
        return "missing"


def write_target(path: str | Path) -> tuple[Path, os.stat_result | None]:
    """The file that writing `path` writes and its stat (None when it does not exist yet): a symbolic link to a
    file (or to nothing yet) is followed to its final target, so that the link stays a link. A link to a device or
    pipe (/dev/stdout) is kept as it is: it is written through."""
    from imgcls_cli.errors import UserError

    path = Path(path)
    try:
        st: os.stat_result | None = os.stat(path)
    except OSError:  # not there yet, a dangling link, or a loop
        st = None
    if path.is_symlink() and (st is None or stat.S_ISREG(st.st_mode)):
        try:
            path = Path(os.path.realpath(path, strict=True))
        except FileNotFoundError:  # a dangling link: its target is created
            path = Path(os.path.realpath(path))
        except OSError as exc:
            raise UserError(f"cannot write {path}: it is a symbolic link that cannot be followed "
                            f"({exc.strerror or exc}).") from None
    return path, st


def _reason(exc: BaseException, file: _RecordingFile | None) -> str | None:
    """What a user reads for a failed write, or None when the exception is not about writing."""
    if file is not None and file.error is not None:
        exc = file.error
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or exc.__class__.__name__
    if isinstance(exc, RuntimeError) and re.search(r"PytorchStreamWriter|file write failed|unexpected pos", str(exc)):
        return "the file could not be written (is the disk full?)"
    return None


@contextlib.contextmanager
def atomic_writer(path: str | Path, what: str = "", sync: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write `path` with; on success it replaces `path` whole (written beside it as
    `.{name}.{pid}.tmp`, then os.replace), so the file on disk is the old one or the new one, never half of one.

    A symbolic link is followed: its target is replaced and the link stays. An existing character device or FIFO
    (/dev/null, a pipe a reader waits on) is written through, never replaced; a block device, socket or folder is
    refused. A failed write (a full disk, no permission) removes the temporary file and is one UserError line;
    `what` names the file in it ("checkpoint "). sync: the data reaches the disk before the file is replaced."""
    from imgcls_cli.errors import UserError

    shown = Path(path)
    target, st = write_target(shown)
    if st is not None and not stat.S_ISREG(st.st_mode):
        if not (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
            raise UserError(f"cannot write {what}{shown}: it is {mode_kind(st.st_mode)}, not a file; give a file path.")
        with _write_through(target, shown, what, mode_kind(st.st_mode)) as f:
            yield f
        return
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    file: _RecordingFile | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _RecordingFile(tmp, "wb") as file:
            yield file  # type: ignore[misc]
            file.flush()
            if sync:
                os.fsync(file.fileno())
        if st is not None:
            os.chmod(tmp, stat.S_IMODE(st.st_mode))  # the replaced file's permissions, not the umask's
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        reason = _reason(exc, file)
        if reason is None or isinstance(exc, UserError):
            raise
        kept = "the previous file is intact" if st is not None else "nothing was written"
        raise UserError(f"cannot write {what}{shown}: {reason}; {kept}.") from None


@contextlib.contextmanager
def _write_through(target: Path, shown: Path, what: str, kind: str) -> Iterator[BinaryIO]:
    """Write into an existing character device or FIFO as it is (never replaced); a FIFO nobody reads is refused
    instead of waiting forever."""
    from imgcls_cli.errors import UserError

    try:
        fd = os.open(target, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise UserError(f"cannot write {what}{shown}: it is a FIFO and nothing reads from it.") from None
        raise UserError(f"cannot write {what}{shown} ({kind}): {exc.strerror or exc}.") from None
    os.set_blocking(fd, True)
    file = _RecordingFile(fd, "wb", closefd=True)
    try:
        with file:
            yield file  # type: ignore[misc]
    except BaseException as exc:
        reason = _reason(exc, file)
        if reason is None or isinstance(exc, UserError):
            raise
        raise UserError(f"cannot write {what}{shown} ({kind}, written through): {reason}.") from None


def write_text_atomic(path: str | Path, text: str | bytes) -> None:
    """Write `path` whole through atomic_writer: bytes as they are, text as UTF-8."""
    with atomic_writer(path) as f:
        f.write(text if isinstance(text, bytes) else text.encode("utf-8"))


def write_json(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """A CSV with a header; text cells that a spreadsheet would run as a formula are quoted (spreadsheet_safe)."""
    columns = list(columns)
    lines = [csv_line([spreadsheet_safe(c) for c in columns])]
    lines += [csv_line([_fmt(spreadsheet_safe(row.get(c))) for c in columns]) for row in rows]
    write_text_atomic(path, "".join(lines))


def csv_line(cells: Sequence[Any]) -> str:
    """One CSV row ending in \n; a cell holding a carriage return is quoted too (Python's csv module quotes only the
    line terminator's characters, and a bare CR would start a new row for every reader)."""
    buf = io.StringIO()
    cr = any(isinstance(c, str) and "\r" in c for c in cells)
    csv.writer(buf, lineterminator="\r\n" if cr else "\n").writerow(cells)
    return buf.getvalue()[:-2] + "\n" if cr else buf.getvalue()


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV that write_csv wrote, its cells as they were given (spreadsheet quoting undone)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{unescape_cell(k): unescape_cell(v) if isinstance(v, str) else v for k, v in row.items()}
                for row in csv.DictReader(f)]


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


def run_status(run_dir: Path) -> str | None:
    """summary.json's status, None when there is none (or it cannot be read)."""
    try:
        return json.loads((run_dir / "summary.json").read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        return None
