"""Six fp32 CPU training runs whose results must not change: record them once, check them after any refactor.

    python benchmarks/bitwise_baseline.py --record tests/baselines/bitwise_cpu_fp32.json
    python benchmarks/bitwise_baseline.py --check tests/baselines/bitwise_cpu_fp32.json

Each run is `imgcls train ... precision=fp32`, typed as a user would (a subprocess), in a temporary folder, one
after the other. What is kept of a run: the sha256 of its best.pt state_dict (over each key's UTF-8 bytes then
the tensor's bytes, in state_dict order) and its metrics.csv rows without the timing columns (epoch_seconds,
images_per_second). The runs: the default run; resnet + cutmix + EMA; distillation from the default run's
best.pt; domain adaptation to digits_inverted; a frozen-encoder fine-tune from the default run's best.pt; and a
run stopped by SIGTERM in the middle of an epoch then finished with `resume=<run dir>` (whose best.pt must also
equal that of the same run left uninterrupted).

--record writes {machine, torch, commit, threads, runs: {name: {command, state_sha256, metrics_rows}}};
--check runs the same commands and prints every difference (exit status 1 if there is one). Float results are
bitwise equal only on the same CPU kind, torch version and thread count: the runs use the recorded thread count
(OMP_NUM_THREADS) and no GPU (CUDA_VISIBLE_DEVICES empty), and a check on another machine or torch says so.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from machine import cpu_name  # noqa: E402

TIMING_COLUMNS = {"epoch_seconds", "images_per_second"}
FP32 = ["precision=fp32"]
SMALL = ["epochs=2", "dataset.max_train_samples=400"]
# The interrupted run: enough steps (16 an epoch) that SIGTERM lands while it trains, last.pt every 2 steps.
RESUMABLE = ["epochs=3", "dataset.max_train_samples=400", "checkpoint.every_n_steps=2", *FP32]
RUN_TIMEOUT = 600  # seconds per command: a hang fails the run instead of blocking for ever


@dataclass
class Run:
    name: str
    args: list[str]  # after `imgcls train`; `{name}` is the run directory of an earlier run
    needs: list[str] = field(default_factory=list)


RUNS = [
    Run("default", [*FP32]),
    Run("resnet_cutmix_ema", ["model=resnet", "augment=cutmix", "ema.decay=0.99", *SMALL, *FP32]),
    Run("distill", ["distill.teacher={default}/checkpoints/best.pt", *SMALL, *FP32], ["default"]),
    Run("domain", ["domain.target=digits_inverted", *SMALL, *FP32]),
    Run("finetune", ["finetune.freeze=encoder", "init={default}/checkpoints/best.pt", *SMALL, *FP32], ["default"]),
    Run("sigterm_resume", RESUMABLE),  # see interrupted_then_resumed
]


class RunFailed(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------ what a run left
def state_sha256(best: Path) -> str:
    import torch

    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    digest = hashlib.sha256()
    for key, tensor in state.items():
        digest.update(key.encode("utf-8"))
        digest.update(tensor.contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


def outcome(run_dir: Path) -> dict:
    return {"state_sha256": state_sha256(run_dir / "checkpoints" / "best.pt"), "metrics_rows": metrics_rows(run_dir)}


# ------------------------------------------------------------------------------------------------ running
def environment(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    env.update(PYTHONHASHSEED="0", OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               CUDA_VISIBLE_DEVICES="", PYTHONIOENCODING="utf-8")
    return env


def train_command(args: list[str], run_dir: Path | None) -> list[str]:
    """`imgcls train ARGS` in run_dir (None: where the command puts it, e.g. the run that resume= continues)."""
    return [sys.executable, "-m", "imgcls_cli", "train", *args, *([f"hydra.run.dir={run_dir}"] if run_dir else [])]


def train(args: list[str], run_dir: Path | None, cwd: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(train_command(args, run_dir), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RunFailed(f"`imgcls train {' '.join(args)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}")


def wait_for_mid_epoch_checkpoint(last: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Poll last.pt until it was written in the middle of an epoch (it holds a data position)."""
    import torch

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if torch.load(last, map_location="cpu", weights_only=True).get("position"):
                return
        except (OSError, RuntimeError, EOFError):
            pass
        time.sleep(0.01)
    raise RunFailed(f"no mid-epoch {last} before the run ended (exit status {proc.poll()})")


def interrupted_then_resumed(tmp: Path, env: dict[str, str]) -> dict:
    """RESUMABLE run uninterrupted, then again stopped by SIGTERM mid-epoch and finished with resume=<run dir>:
    the two best.pt and metrics.csv must be equal; the outcome is the resumed run's."""
    whole, stopped = tmp / "sigterm_whole", tmp / "sigterm_resume"
    train(RESUMABLE, whole, tmp, env)
    proc = subprocess.Popen(train_command(RESUMABLE, stopped), cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_mid_epoch_checkpoint(stopped / "checkpoints" / "last.pt", proc)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    status = json.loads((stopped / "summary.json").read_text(encoding="utf-8"))["status"]
    if proc.returncode != 143 or status != "interrupted":
        raise RunFailed(f"SIGTERM did not interrupt the run (exit {proc.returncode}, status {status}):\n"
                        f"{stderr[-3000:]}")
    train([*RESUMABLE, f"resume={stopped}"], None, tmp, env)
    resumed, uninterrupted = outcome(stopped), outcome(whole)
    if resumed["state_sha256"] != uninterrupted["state_sha256"]:
        raise RunFailed(f"the resumed run's best.pt ({resumed['state_sha256']}) differs from the uninterrupted "
                        f"run's ({uninterrupted['state_sha256']})")
    if resumed["metrics_rows"] != uninterrupted["metrics_rows"]:
        raise RunFailed("the resumed run's metrics.csv differs from the uninterrupted run's")
    return resumed


def shown(run: Run) -> str:
    """The command as a user types it, earlier runs' directories as <name run dir>."""
    args = " ".join(run.args).replace("{default}", "<default run dir>")
    if run.name == "sigterm_resume":
        return (f"imgcls train {args}; SIGTERM once last.pt holds a mid-epoch position; "
                f"imgcls train {args} resume=<its run dir>")
    return f"imgcls train {args}"


def run_all(threads: int) -> dict[str, dict]:
    env = environment(threads)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="imgcls-bitwise-") as name:
        tmp = Path(name)
        for run in RUNS:
            start = time.perf_counter()
            print(f"{run.name}: {shown(run)}", flush=True)
            if run.name == "sigterm_resume":
                got = interrupted_then_resumed(tmp, env)
            else:
                args = [a.format(**{n: tmp / n for n in run.needs}) for a in run.args]
                train(args, tmp / run.name, tmp, env)
                got = outcome(tmp / run.name)
            results[run.name] = {"command": shown(run), **got}
            print(f"  {got['state_sha256']}  ({time.perf_counter() - start:.0f} s)", flush=True)
    return results


# ------------------------------------------------------------------------------------------------ record / check
def this_machine() -> dict:
    import torch

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"machine": lscpu_model_name(), "isa": cpu_isa(), "torch": torch.__version__, "commit": commit}


ISA_LEVELS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")  # the widest first: what torch's CPU kernels use


def cpu_isa() -> str:
    """The widest vector instruction set this CPU has: one CPU model name covers machines with and without
    AVX-512, whose fp32 kernels (and so results) differ."""
    try:
        flags = set(next((line for line in Path("/proc/cpuinfo").read_text().splitlines()
                          if line.startswith("flags")), "").split())
    except OSError:
        flags = set()
    return next((isa for isa in ISA_LEVELS if isa in flags), "other")


def lscpu_model_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"}).stdout
    except OSError:
        out = ""
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name:")),
                cpu_name())


def differences(recorded: dict, results: dict) -> list[str]:
    out = []
    for name, want in recorded["runs"].items():
        got = results.get(name)
        if got is None:
            out.append(f"{name}: not run")
            continue
        if got["state_sha256"] != want["state_sha256"]:
            out.append(f"{name}: best.pt state_dict sha256 {got['state_sha256']}, recorded {want['state_sha256']}")
        rows_now, rows_then = got["metrics_rows"], want["metrics_rows"]
        if len(rows_now) != len(rows_then):
            out.append(f"{name}: metrics.csv has {len(rows_now)} rows, recorded {len(rows_then)}")
        for i, (now, then) in enumerate(zip(rows_now, rows_then), start=1):
            for column in sorted(now.keys() | then.keys()):
                if now.get(column) != then.get(column):
                    out.append(f"{name}: metrics.csv row {i} {column} = {now.get(column)}, "
                               f"recorded {then.get(column)}")
    out += [f"{name}: not recorded" for name in results if name not in recorded["runs"]]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--record", metavar="FILE", type=Path, help="run the six commands and write their results")
    mode.add_argument("--check", metavar="FILE", type=Path, help="run them and compare with FILE (exit 1 if any "
                                                                 "result differs)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for --record (default 2; --check "
                                                                "uses the recorded number)")
    args = parser.parse_args(argv)
    if args.record:
        results = run_all(args.threads)
        record = {**this_machine(), "threads": args.threads, "runs": results}
        args.record.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.record.with_name(args.record.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, args.record)
        print(f"recorded {len(results)} runs in {args.record}")
        return 0
    try:
        recorded = json.loads(args.check.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        print(f"error: cannot read the recorded baseline {args.check}: {e}", file=sys.stderr)
        return 2
    here = this_machine()
    for key in ("machine", "isa", "torch"):
        if here[key] != recorded.get(key):
            print(f"note: recorded with {key} {recorded.get(key)}, this is {here[key]}: float results may differ")
    results = run_all(int(recorded.get("threads", args.threads)))
    found = differences(recorded, results)
    for line in found:
        print(f"DIFFERS {line}")
    print(f"{len(found)} difference(s) from {args.check} (recorded at commit {recorded.get('commit')})"
          if found else f"all {len(results)} runs equal {args.check} (recorded at commit {recorded.get('commit')})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
