"""Run directories that are unique, locked while a run uses them, and never overwritten unless asked.

- `${imgcls.unique:PATH}` (the default hydra.run.dir / hydra.sweep.dir) claims PATH with os.mkdir, or PATH_2,
  PATH_3, ... when another run took it first: two runs started in the same second never share a directory.
  The claim is made once per run and PATH (Hydra resolves the key more than once, and a sweep's jobs
  re-compose it); the value travels in the config's resolver cache to a launcher's worker processes.
- RunDirGuard, a Hydra callback, runs before Hydra writes anything into the directory (.hydra/, the log):
  it creates the directory, takes an fcntl.flock on `.imgcls.lock` inside it (held while the run lasts and
  released by the kernel when the process dies, SIGKILL included), and refuses a directory that holds a finished
  run unless overwrite=true, or the resume of a run that completed. A resumed run's stale temporary files
  (`.{name}.{pid}.tmp`, left by a write that a SIGKILL cut short) are removed once the lock is held.
"""
from __future__ import annotations

import atexit
import errno
import fcntl
import glob
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, NoReturn, TypeVar

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from imgcls_cli.errors import UserError
from imgcls_cli.paths import another_commands_folder
from imgcls_cli.rundir import run_status

T = TypeVar("T")

LOCK_NAME = ".imgcls.lock"
STALE_TMP = re.compile(r"^\..+\.\d+\.tmp$")  # write_text_atomic's and save_checkpoint's temporary files
# What an eval, predict, export or explain run leaves.
RESULTS = ("metrics.json", "predictions.csv", "leaderboard.csv", "export.json", "explanations.csv")
SWEEP_RESULTS = ("summary.csv", "multirun.yaml", "optimization_results.yaml")
PRINT_ONLY = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc"}

_claimed: dict[tuple[str, str], str] = {}  # (cwd, PATH) -> the directory claimed for the run under way
_held: dict[str, int] = {}  # absolute run directory -> the locked file descriptor


# ------------------------------------------------------------------------------------------- unique directories
def claim(base: str) -> str:
    """base, or base_2, base_3, ...: the first that this call creates (os.mkdir is atomic: one process wins)."""
    parent = Path(base).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return base  # RunDirGuard reports why the directory cannot be made
    candidate, n = base, 1
    while True:
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            n += 1
            candidate = f"{base}_{n}"
        except OSError:
            return base


def unique_dir(base: str) -> str:
    """The `imgcls.unique` resolver: the directory claimed for base by the run under way (claimed on first use,
    the same however often it is resolved)."""
    base = str(base)
    if any(arg.split("=", 1)[0] in PRINT_ONLY for arg in sys.argv[1:]):  # --cfg, --help, --info: no run starts
        return base
    if another_commands_folder(base):  # lr_find.yaml merges train.yaml, whose folder Hydra resolves
        return base
    key = (os.getcwd(), base)
    if key not in _claimed:
        _claimed[key] = claim(base)
    return _claimed[key]


OmegaConf.register_new_resolver("imgcls.unique", unique_dir, use_cache=True, replace=True)


# ------------------------------------------------------------------------------------------- the lock
def _owner(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""


def acquire(run_dir: Path, what: str = "run directory") -> None:
    """Lock run_dir for this process, or a UserError naming the run that holds it."""
    key = str(run_dir.resolve())
    if key in _held:
        return
    path = run_dir / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise UserError(f"cannot write into {what} {run_dir}: {exc.strerror or exc}; choose a writable "
                            f"hydra.{'sweep' if 'sweep' in what else 'run'}.dir.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = _owner(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(f"{what} {run_dir} is in use by another run{owner}; wait for it to end, or "
                                "choose another directory.") from None
            raise UserError(f"cannot lock {what} {run_dir}: {exc.strerror or exc}.") from None
        # The previous holder removes the file as it lets go: a lock on a file no longer at `path` locks nothing.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[key] = fd


def release(run_dir: Path | str) -> None:
    """Let go of run_dir's lock (a no-op where this process holds none); the lock file goes with it. A later run
    in this process (the CLI called in-process) claims a directory of its own, no longer this one."""
    key = str(Path(run_dir).resolve())
    for claimed_key, claimed in list(_claimed.items()):
        if str((Path(claimed_key[0]) / claimed).resolve()) == key:
            del _claimed[claimed_key]
    fd = _held.pop(key, None)
    if fd is None:
        return
    try:
        os.unlink(Path(run_dir) / LOCK_NAME)
    except OSError:
        pass
    os.close(fd)


def in_use(run_dir: Path) -> bool:
    """Whether a live process holds run_dir (its lock file names a running pid); nothing is locked to find out."""
    try:
        text = (run_dir / LOCK_NAME).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return False
    if not text.isdigit():
        return False
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


@atexit.register
def release_all() -> None:
    for key in list(_held):
        release(key)


# ------------------------------------------------------------------------------------------- what a directory holds
def previous_run(run_dir: Path) -> str | None:
    """What shows that run_dir holds a run that ended (None when nothing does): a final summary.json status,
    checkpoints, or the results of an eval, predict, export or explain run."""
    status = run_status(run_dir)
    if status not in (None, "running"):
        return f"summary.json: {status}"
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt")) if (run_dir / "checkpoints").is_dir() \
        else []
    if checkpoints:
        return f"checkpoints/{checkpoints[0]}"
    return next((name for name in RESULTS if (run_dir / name).is_file()), None)


def previous_sweep(sweep_dir: Path) -> str | None:
    """What shows that sweep_dir holds a sweep (None when nothing does)."""
    found = next((name for name in SWEEP_RESULTS if (sweep_dir / name).is_file()), None)
    if found:
        return found
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()) \
        if sweep_dir.is_dir() else []
    return f"{jobs[0].name}/" if jobs else None


def clean_stale_tmp(run_dir: Path) -> list[Path]:
    """Remove the temporary files an interrupted atomic write left (`.{name}.{pid}.tmp`); call with the lock held,
    which means no other process writes here."""
    removed = []
    for path in sorted(run_dir.rglob(".*.tmp")):
        if STALE_TMP.match(path.name) and path.is_file():
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed


def _strings(node: Any) -> Iterable[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if str(key) != "output":  # predict's output= is written, not read
                yield from ((f"{key}.{k}".rstrip("."), v) for k, v in _strings(value))
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str) and node:
        yield "", node


def inputs_inside(cfg: dict[str, Any], run_dir: Path) -> list[str]:
    """The config's values that name existing files or folders inside run_dir (a checkpoint, a teacher, images)."""
    root, found = run_dir.resolve(), []
    for key, value in _strings(cfg):
        if len(value) > 4096 or "\0" in value:
            continue
        paths = glob.glob(value.lstrip("@"), recursive=True) if glob.has_magic(value) else [value.lstrip("@")]
        for path in paths:
            try:
                p = Path(path).expanduser()
                if p.exists() and p.resolve().is_relative_to(root):
                    found.append(f"{key}={value}")
                    break
            except (OSError, ValueError):
                continue
    return found


def clear(run_dir: Path) -> None:
    """Remove everything in run_dir but the lock file."""
    for entry in run_dir.iterdir():
        if entry.name == LOCK_NAME:
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as exc:
            raise UserError(f"overwrite=true: cannot remove {entry}: {exc.strerror or exc}.") from None


# ------------------------------------------------------------------------------------------- the checks
def make_dir(path: Path, key: str) -> None:
    """Create the run (or sweep) directory, or a UserError saying why it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{key}={_short(path)} is a file, not a directory; choose another {key}.") from None
    except OSError as exc:
        hint = "a shorter path" if exc.errno == errno.ENAMETOOLONG else "a path in a writable place"
        raise UserError(f"cannot create the directory {key}={_short(path)}: {exc.strerror or exc}; choose another "
                        f"{key} ({hint}).") from None
    if not path.is_dir():
        raise UserError(f"{key}={_short(path)} is not a directory; choose another {key}.")


def _short(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 120 else f"{text[:60]}...{text[-40:]} ({len(text)} characters)"


def _task(config: DictConfig) -> dict[str, Any]:
    """The job's part of the config (not hydra.*) as plain values, resolved where it can be."""
    out: dict[str, Any] = {}
    for key in config:
        if key == "hydra":
            continue
        node = config._get_node(key)
        try:
            out[str(key)] = OmegaConf.to_container(node, resolve=True, throw_on_missing=False) \
                if OmegaConf.is_config(node) else config[key]
        except Exception:  # a broken interpolation is reported by the run itself
            out[str(key)] = OmegaConf.to_container(node) if OmegaConf.is_config(node) else None
    return out


def _overwrite(cfg: DictConfig) -> bool:
    value = cfg.get("overwrite", False)
    if not isinstance(value, bool):
        raise UserError(f"overwrite must be true or false, not '{value}'.")
    return value


def check_run_dir(run_dir: Path, cfg: dict[str, Any], overwrite: bool) -> list[Path]:
    """With run_dir locked: refuse what would overwrite a finished run; returns the stale files removed."""
    last = run_dir / "checkpoints" / "last.pt"
    status = run_status(run_dir)
    if cfg.get("resume") not in (None, "", False) and last.is_file():  # continuing this run
        if status == "completed" and not overwrite:
            raise UserError(f"resume: {run_dir} completed; there is nothing to continue. Train further in a new run "
                            f"that starts from its weights (init={last} epochs=N), or add overwrite=true to "
                            "continue this run in its directory.")
        return clean_stale_tmp(run_dir)
    found = previous_run(run_dir)
    if found is None:
        return []
    if not overwrite:
        if last.is_file() and status not in ("completed", "diverged"):
            raise UserError(f"run directory {run_dir} holds a run that did not finish ({found}); continue it with "
                            f"resume={run_dir}, or add overwrite=true to replace it.")
        raise UserError(f"run directory {run_dir} already holds a finished run ({found}); choose another "
                        "hydra.run.dir, or add overwrite=true to replace it.")
    empty_for_reuse(run_dir, cfg, "hydra.run.dir")
    return []


def empty_for_reuse(folder: Path, cfg: dict[str, Any], key: str) -> None:
    """overwrite=true: remove what an earlier run left in folder, which must be a run's (Hydra's .hydra/ in it or in
    its jobs' folders) and hold nothing this run reads."""
    if not ((folder / ".hydra").is_dir() or (folder / "multirun.yaml").is_file()
            or any((p / ".hydra").is_dir() for p in folder.iterdir() if p.is_dir())):
        raise UserError(f"{key}={folder} holds files that are not an imgcls run's (no .hydra/ folder); "
                        f"overwrite=true empties only run directories: choose another {key}.")
    read = inputs_inside(cfg, folder)
    if read:
        raise UserError(f"overwrite=true would delete {read[0]} in {folder}, which this run reads; copy it "
                        f"elsewhere first, or choose another {key}.")
    clear(folder)


def _refuse(exc: UserError) -> NoReturn:
    """The one line and exit status 2: Hydra turns a callback's exceptions into warnings, but lets SystemExit pass."""
    print(f"error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None


class RunDirGuard(Callback):
    """Claims, locks and checks the run (or sweep) directory before Hydra writes into it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from imgcls_cli.engine.distributed import quiet_rank

        if quiet_rank():  # ranks > 0 of data-parallel training write nothing but their own scratch folder
            return
        try:
            self._start_run(config)
        except UserError as exc:
            _refuse(exc)

    def _start_run(self, config: DictConfig) -> None:
        overwrite = _overwrite(config)
        run_dir = Path(str(config.hydra.run.dir))
        removed = _claim(run_dir, "hydra.run.dir", "run directory",
                         lambda: check_run_dir(run_dir, _task(config), overwrite))
        if removed:
            print(f"resume: removed {len(removed)} temporary file(s) that an interrupted write left: "
                  f"{', '.join(str(p.relative_to(run_dir)) for p in removed)}")

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(Path(str(config.hydra.run.dir)))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._start_sweep(config)
        except UserError as exc:
            _refuse(exc)

    def _start_sweep(self, config: DictConfig) -> None:
        overwrite = _overwrite(config)
        sweep_dir = Path(str(config.hydra.sweep.dir))

        def check() -> None:
            found = previous_sweep(sweep_dir)
            if found and not overwrite:
                raise UserError(f"sweep directory {sweep_dir} already holds a sweep ({found}); choose another "
                                "hydra.sweep.dir, or add overwrite=true to replace it.")
            if found:
                empty_for_reuse(sweep_dir, _task(config), "hydra.sweep.dir")

        _claim(sweep_dir, "hydra.sweep.dir", "sweep directory", check)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(Path(str(config.hydra.sweep.dir)))


def _claim(folder: Path, key: str, what: str, check: Callable[[], T]) -> T:
    """Create and lock the folder `key` names, then check it; the lock is let go where the check refuses."""
    make_dir(folder, key)
    acquire(folder, what)
    try:
        return check()
    except BaseException:
        release(folder)
        raise
