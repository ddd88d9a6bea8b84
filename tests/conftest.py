"""Helpers and shared fixtures for the end-to-end CLI tests (tests/test_cli.py and the other *_cli files).

A CLI call as a user types it is a process of its own, `python -m imgcls_cli ...` (run_cli, run_many), forked
from this test process's warm server (forkcli.py) so that it does not pay the 4-6 s of interpreter + torch +
Hydra start-up; the expensive things are done once per session (one tiny training run, one sweep, one failing
sweep). The many cheap independent calls (user mistakes, help texts,
composed configs) run in ONE child process that calls `imgcls_cli.cli.main(argv)` for each (run_in_one_process):
the same exit status, stdout and stderr, for one start-up. A representative set stays real subprocesses.

Run as a script (`python tests/conftest.py CASES RESULTS`), this file is that child process.
Nothing here is autouse: the fixtures cost nothing to the other test files unless requested.
"""
from __future__ import annotations

import atexit
import contextlib
import csv
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Test processes side by side (pytest -n): the cores are shared out, for each one's CLI subprocesses too;
    # more threads than cores would only make OpenMP's threads wait for each other. Set before torch loads.
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // _workers)))

# A training run that takes ~1 s of compute on CPU yet learns (test accuracy ~0.8 with seed 0):
# 600 synthetic 3x32x32 images, 5 classes -> 390 train / 90 val / 120 test.
TINY_NUM_SAMPLES = 600
TINY_EPOCHS = 4
TINY_BATCH_SIZE = 32
TINY_SETTINGS_NO_EPOCHS = [
    "dataset=synthetic",
    f"dataset.num_samples={TINY_NUM_SAMPLES}",
    f"batch_size={TINY_BATCH_SIZE}",
    "model.widths=[8,16,16]",
    "model.hidden=32",
]
TINY = [*TINY_SETTINGS_NO_EPOCHS, f"epochs={TINY_EPOCHS}"]
SYNTHETIC_CLASSES = ["horizontal", "vertical", "diagonal", "circular", "noise"]

# Seconds per subprocess: a hang fails the test instead of the whole session. Generous: on a machine shared with
# other work, a call that takes 30 s alone can take several times as long.
RUN_TIMEOUT = 600
BATCH_TIMEOUT = 2 * RUN_TIMEOUT  # for all the calls of one run_in_one_process
ROOT = Path(__file__).resolve().parents[1]
PARALLEL = max(2, min(4, os.cpu_count() or 2))
RUN_DIR_LINE = re.compile(r"^Run directory: (.+)$")


# --------------------------------------------------------------------------------------------- the workers' order
# Test files by their cost, the costliest first (what a worker spends on them: `--durations`, setup included). xdist
# hands a whole file to a worker (--dist loadfile) in collection order (--no-loadscope-reorder): the long files
# start at once and the short ones fill in at the end, so that both workers finish together. Files not listed
# (in-process unit tests, seconds each) come after, in their usual order.
COSTLIEST_FIRST = [
    "test_cli.py", "test_distributed.py", "test_model_zoo_cli.py", "test_datasets_cli.py", "test_export.py",
    "test_tracking.py", "test_resume.py", "test_docs.py", "test_lr_find.py", "test_timm.py", "test_models.py",
    "test_launchers.py", "test_multilabel_cli.py", "test_transfer.py", "test_training.py", "test_export_runtime.py",
    "test_benchmark_runner.py", "test_trust_training.py", "test_trust_rundirs.py", "test_explain.py",
    "test_trust_eval.py", "test_forkcli.py", "test_plots.py", "test_report_browser.py", "test_check.py",
    "test_trust_data.py", "test_trust_config.py", "test_specs.py", "test_tv_and_listing.py", "test_packaging.py",
    "test_shifted.py", "test_models_classic.py", "test_distill.py", "test_eval_ensemble.py",
    "test_multilabel_data.py", "test_api.py", "test_models_modern.py", "test_recipes.py", "test_trust_files.py",
    "test_report.py", "test_check_cli.py", "test_report_cli.py", "test_streaming.py",
]


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]):
    result = yield
    rank = {name: i for i, name in enumerate(COSTLIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order
    return result


# --------------------------------------------------------------------------------------------- running the CLI
@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    cwd: Path

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    @property
    def stdout_lines(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.strip()]

    @property
    def run_dir(self) -> Path:
        """The path of the `Run directory: <path>` line, which must be the last line of stdout."""
        assert self.stdout_lines, f"no stdout\n{self.describe()}"
        match = RUN_DIR_LINE.match(self.stdout_lines[-1])
        assert match, f"last stdout line is not 'Run directory: <path>'\n{self.describe()}"
        path = Path(match.group(1))
        return path if path.is_absolute() else self.cwd / path

    def describe(self) -> str:
        return (f"$ imgcls {' '.join(self.args)}\n(cwd {self.cwd})\nexit status {self.returncode}\n"
                f"--- stdout (tail) ---\n{self.stdout[-3000:]}\n--- stderr (tail) ---\n{self.stderr[-3000:]}")


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)  # the CLI sets it itself; a user does not have it
    env["PYTHONIOENCODING"] = "utf-8"  # rich tables use box-drawing characters
    env.setdefault("PYTHONHASHSEED", "0")
    return env


_fork_servers: dict[int, object] = {}  # this test process's warm CLI server (tests/forkcli.py), by pid
_fork_lock = threading.Lock()


def _fork_server(env: dict[str, str]):
    """The warm server that forks each CLI call, or None where a fresh interpreter is needed (see forkcli.py)."""
    if os.environ.get("IMGCLS_TEST_FRESH_INTERPRETER") == "1" or os.environ.get("COV_CORE_SOURCE") \
            or "coverage" in sys.modules and getattr(sys.modules["coverage"], "Coverage").current() is not None:
        return None
    import forkcli

    server = _fork_servers.get(os.getpid())
    if server is None:
        server = _fork_servers[os.getpid()] = forkcli.ForkServer(cli_env(), ROOT)
        atexit.register(server.close)
    return server if server.serves(env) else None


def run_cli(*args: str, cwd: str | Path, timeout: float = RUN_TIMEOUT, env: dict[str, str] | None = None) -> Result:
    """Run `python -m imgcls_cli ARGS` in cwd, as a user would, and capture everything.

    The command is a process of its own either way: forked from this test process's warm server when its
    environment allows (tests/forkcli.py), else a fresh interpreter."""
    import tempfile

    cwd = Path(cwd)
    cwd.mkdir(parents=True, exist_ok=True)
    argv, env = [str(a) for a in args], dict(cli_env() if env is None else env)
    with _fork_lock:  # one call at a time per server: run_many's calls take turns
        server = _fork_server(env)
        if server is not None:
            with tempfile.TemporaryDirectory(prefix="imgcls-call-") as scratch:
                status, out, err = server.run(argv, cwd, env, timeout, Path(scratch))
            return Result(argv, status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), cwd)
    proc = subprocess.run([sys.executable, "-m", "imgcls_cli", *argv], cwd=cwd, env=env,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return Result(argv, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                  proc.stderr.decode("utf-8", "replace"), cwd)


def run_many(calls: dict[str, tuple[Sequence[str], Path]]) -> dict[str, Result]:
    """Run several independent CLI calls a few at a time: {name: (args, cwd)} -> {name: Result}."""
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        futures = {name: pool.submit(run_cli, *args, cwd=cwd) for name, (args, cwd) in calls.items()}
        return {name: future.result() for name, future in futures.items()}


def run_in_one_process(calls: dict[str, tuple[Sequence[str], Path]], env: dict[str, str] | None = None,
                       timeout: float = BATCH_TIMEOUT) -> dict[str, Result]:
    """{name: (args, cwd)} -> {name: Result}, every call `imgcls_cli.cli.main(args)` in one child process, in turn.

    For calls that start no other process and need no signal: exit status, stdout and stderr are those of
    `imgcls ARGS` typed in cwd (a traceback is exit status 1 with the traceback on stderr), for one start-up.
    env replaces the child's environment (default: cli_env()).
    """
    import tempfile

    names = list(calls)
    cases = [{"args": [str(a) for a in calls[n][0]], "cwd": str(calls[n][1])} for n in names]
    with tempfile.TemporaryDirectory(prefix="imgcls-batch-") as scratch:
        cases_file, results_file = Path(scratch) / "cases.json", Path(scratch) / "results.json"
        cases_file.write_text(json.dumps(cases), encoding="utf-8")
        child_env = dict(cli_env() if env is None else env)
        argv = [str(Path(__file__).resolve()), str(cases_file), str(results_file)]
        with _fork_lock:
            server = _fork_server(child_env)
            if server is not None:  # the child forked from the warm server: no start-up at all
                returncode, stdout, stderr = server.run(argv[1:], Path(scratch), child_env, timeout, Path(scratch),
                                                        script=Path(argv[0]))
        if server is None:
            child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), child_env.get("PYTHONPATH")]))
            proc = subprocess.run([sys.executable, *argv], cwd=scratch, env=child_env, capture_output=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
            returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        assert returncode == 0 and results_file.is_file(), (
            f"the in-process CLI runner failed (exit {returncode}):\n"
            f"{stdout.decode('utf-8', 'replace')[-3000:]}\n{stderr.decode('utf-8', 'replace')[-3000:]}")
        results = json.loads(results_file.read_text(encoding="utf-8"))
    return {name: Result(case["args"], r["returncode"], r["stdout"], r["stderr"], Path(case["cwd"]))
            for name, case, r in zip(names, cases, results)}


def _call_in_this_process(args: list[str], cwd: str) -> dict:
    """`imgcls ARGS` in cwd, in this process: exit status, stdout, stderr; cwd, argv and environment restored."""
    from imgcls_cli import cli

    out, err = io.StringIO(), io.StringIO()
    saved_cwd, saved_argv, saved_env = os.getcwd(), list(sys.argv), dict(os.environ)
    Path(cwd).mkdir(parents=True, exist_ok=True)
    os.chdir(cwd)
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main(list(args))
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - the command's failure, reported as a process would
            traceback.print_exc()
            status = 1
    seconds = time.perf_counter() - start
    os.chdir(saved_cwd)
    sys.argv[:] = saved_argv
    os.environ.clear()
    os.environ.update(saved_env)
    return {"returncode": status if isinstance(status, int) else 0, "stdout": out.getvalue(),
            "stderr": err.getvalue(), "seconds": round(seconds, 2)}


def _child_main(cases_file: str, results_file: str) -> None:
    cases = json.loads(Path(cases_file).read_text(encoding="utf-8"))
    results = [_call_in_this_process(case["args"], case["cwd"]) for case in cases]
    Path(results_file).write_text(json.dumps(results), encoding="utf-8")


def wait_for_mid_epoch_checkpoint(last: Path, proc: subprocess.Popen, timeout: float = 120) -> dict:
    """Poll last.pt until it was written in the middle of an epoch (it holds a position)."""
    import torch

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            ckpt = torch.load(last, map_location="cpu", weights_only=True)
            if ckpt.get("position"):
                return ckpt
        except (OSError, RuntimeError, EOFError):
            pass
        time.sleep(0.01)
    raise AssertionError(f"no mid-epoch last.pt before the run ended (exit {proc.poll()})")


def assert_ok(result: Result) -> None:
    assert result.returncode == 0, result.describe()
    assert_no_traceback(result)


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.stdout and "Traceback" not in result.stderr, result.describe()


def assert_user_error(result: Result, *mentions: str) -> str:
    """Exit status 2, exactly one non-empty stderr line starting with 'error:', naming `mentions`, no traceback."""
    assert result.returncode == 2, result.describe()
    assert_no_traceback(result)
    lines = result.stderr_lines
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}\n{result.describe()}"
    line = lines[0]
    assert line.startswith("error:") and len(line) > len("error: ") + 5, result.describe()
    for text in mentions:
        assert text.lower() in line.lower(), f"stderr does not mention {text!r}\n{result.describe()}"
    return line


# --------------------------------------------------------------------------------------------- reading files
def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def csv_header(path: str | Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f))


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def files_under(root: Path) -> set[str]:
    """Every file under root (hidden ones included), as POSIX paths relative to root."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def split_ids(run_dir: Path) -> dict[str, list[str]]:
    """splits.csv -> {split: [ids in file order]}."""
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    rows = read_csv(run_dir / "splits.csv")
    id_column = csv_header(run_dir / "splits.csv")[0]
    for row in rows:
        out.setdefault(row["split"], []).append(row[id_column])
    return out


def png_shape(path: Path) -> tuple[int, ...]:
    import cv2

    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), f"{path} is not a PNG file"
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, f"{path} does not decode"
    return image.shape


# --------------------------------------------------------------------------------------------- image folders
def compose_plain(config: str, *overrides: str) -> dict:
    """conf/<config>.yaml with overrides, as a plain dict (not resolved; without the hydra node)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from imgcls_cli.paths import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(config, overrides=list(overrides))
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    return plain


def write_png(path: Path, chw_uint8) -> Path:
    """Write a uint8 (C, H, W) RGB or grayscale image as a PNG (lossless) with OpenCV."""
    import cv2
    import numpy as np

    image = np.asarray(chw_uint8)
    hwc = image[0] if image.shape[0] == 1 else cv2.cvtColor(np.ascontiguousarray(image.transpose(1, 2, 0)),
                                                             cv2.COLOR_RGB2BGR)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), hwc), f"cv2 could not write {path}"
    return path


def write_broken_files(folder: Path) -> tuple[Path, Path]:
    """A .png that holds text and a zero-byte .jpg."""
    folder.mkdir(parents=True, exist_ok=True)
    broken = folder / "broken.png"
    broken.write_text("this is not a PNG file\n")
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    return broken, empty


def synthetic_images(num_samples: int, num_classes: int, image_size: int, channels: int, seed: int):
    from imgcls_cli.data.synthetic import make_synthetic

    return make_synthetic(num_samples, num_classes, image_size, channels, seed)


def walk_keys(obj, path: str = "") -> Iterable[tuple[str, object]]:
    """(dotted key, value) for every key and leaf of nested dicts/lists."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield f"{path}.{key}".lstrip("."), key
            yield from walk_keys(value, f"{path}.{key}".lstrip("."))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from walk_keys(value, f"{path}[{i}]")
    else:
        yield path, obj


# --------------------------------------------------------------------------------------------- shared runs
@dataclass
class TrainedRun:
    result: Result
    run_dir: Path

    @property
    def best(self) -> Path:
        return self.run_dir / "checkpoints" / "best.pt"

    @property
    def last(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"


def run_once(tmp_path_factory, name: str, *args: str) -> Result:
    """`imgcls ARGS` in a folder `name` (`{base}` in ARGS: that folder), run once for the whole test session: with
    pytest -n, the first worker to ask runs it and the others wait for and read its result (the files are shared
    read-only, as a session fixture's are within one process)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    base, saved = root / name, root / f"{name}.json"
    with FileLock(str(root / f"{name}.lock")):
        if saved.is_file():
            return Result(**{**json.loads(saved.read_text()), "cwd": base})
        base.mkdir(parents=True, exist_ok=True)
        result = run_cli(*(a.replace("{base}", str(base)) for a in args), cwd=base)
        saved.write_text(json.dumps({k: v for k, v in vars(result).items() if k != "cwd"}))
        return result


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRun:
    """One tiny training run, typed as a user would, in a fresh folder (so it lands in ./outputs/train/...)."""
    result = run_once(tmp_path_factory, "train_cwd", "train", *TINY)
    assert_ok(result)
    return TrainedRun(result, result.run_dir)


@pytest.fixture(scope="session")
def sweep_run(tmp_path_factory) -> Result:
    """`imgcls train -m schedule=step,cosine <tiny>`: job 1 (cosine, seed 0) repeats trained_run exactly."""
    return run_once(tmp_path_factory, "sweep", "train", "-m", "schedule=step,cosine", *TINY,
                    "hydra.sweep.dir={base}/sweep")


@pytest.fixture(scope="session")
def failing_sweep_run(tmp_path_factory) -> Result:
    """`imgcls train -m seed=1,-1 <tiny>`: job 0 completes with another seed, job 1 (seed=-1) fails."""
    return run_once(tmp_path_factory, "failing_sweep", "train", "-m", "seed=1,-1", *TINY,
                    "hydra.sweep.dir={base}/sweep")


if __name__ == "__main__":
    _child_main(*sys.argv[1:3])
