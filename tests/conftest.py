"""Helpers and shared fixtures for the end-to-end CLI tests (tests/test_cli.py).

Every CLI call is a real subprocess, `python -m imgcls_cli ...`, as a user would type it. Each one pays
~3-4 s of interpreter + torch start-up, so the expensive things are done once per session (one tiny
training run, one sweep, one failing sweep) and the many cheap independent calls (user mistakes, help
texts) run a few at a time in parallel.

Nothing here is autouse: the fixtures cost nothing to the other test files unless requested.
"""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
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

RUN_TIMEOUT = 240  # seconds, per subprocess: a hang fails the test instead of the whole session
PARALLEL = max(2, min(4, os.cpu_count() or 2))
RUN_DIR_LINE = re.compile(r"^Run directory: (.+)$")


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


def run_cli(*args: str, cwd: str | Path, timeout: float = RUN_TIMEOUT) -> Result:
    """Run `python -m imgcls_cli ARGS` in cwd, as a user would, and capture everything."""
    cwd = Path(cwd)
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "imgcls_cli", *map(str, args)], cwd=cwd, env=cli_env(),
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return Result([str(a) for a in args], proc.returncode, proc.stdout.decode("utf-8", "replace"),
                  proc.stderr.decode("utf-8", "replace"), cwd)


def run_many(calls: dict[str, tuple[Sequence[str], Path]]) -> dict[str, Result]:
    """Run several independent CLI calls a few at a time: {name: (args, cwd)} -> {name: Result}."""
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        futures = {name: pool.submit(run_cli, *args, cwd=cwd) for name, (args, cwd) in calls.items()}
        return {name: future.result() for name, future in futures.items()}


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


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRun:
    """One tiny training run, typed as a user would, in a fresh folder (so it lands in ./outputs/train/...)."""
    cwd = tmp_path_factory.mktemp("train_cwd")
    result = run_cli("train", *TINY, cwd=cwd)
    assert_ok(result)
    return TrainedRun(result, result.run_dir)


@pytest.fixture(scope="session")
def sweep_run(tmp_path_factory) -> Result:
    """`imgcls train -m schedule=step,cosine <tiny>`: job 1 (cosine, seed 0) repeats trained_run exactly."""
    base = tmp_path_factory.mktemp("sweep")
    return run_cli("train", "-m", "schedule=step,cosine", *TINY, f"hydra.sweep.dir={base / 'sweep'}", cwd=base)


@pytest.fixture(scope="session")
def failing_sweep_run(tmp_path_factory) -> Result:
    """`imgcls train -m seed=1,-1 <tiny>`: job 0 completes with another seed, job 1 (seed=-1) fails."""
    base = tmp_path_factory.mktemp("failing_sweep")
    return run_cli("train", "-m", "seed=1,-1", *TINY, f"hydra.sweep.dir={base / 'sweep'}", cwd=base)
