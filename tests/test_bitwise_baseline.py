"""Nothing changes for a user: six fp32 CPU runs give the best.pt tensors and metrics.csv rows recorded in
tests/baselines/bitwise_cpu_fp32*.json, one file per CPU instruction set (AVX-512 and AVX2 CPUs of one model name
give other floats; benchmarks/bitwise_baseline.py --record made them; --check compares)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASELINES = sorted((ROOT / "tests" / "baselines").glob("bitwise_cpu_fp32*.json"))
SCRIPT = ROOT / "benchmarks" / "bitwise_baseline.py"
RUNS = {"default", "resnet_cutmix_ema", "distill", "domain", "finetune", "sigterm_resume"}
METRIC_COLUMNS = {"epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy"}
TIMING_COLUMNS = {"epoch_seconds", "images_per_second"}


def this_isa() -> str:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from bitwise_baseline import cpu_isa
    finally:
        sys.path.pop(0)
    return cpu_isa()


@pytest.mark.parametrize("path", BASELINES, ids=lambda p: p.name)
def test_the_baseline_holds_the_six_runs_with_their_state_sha256_and_metrics_rows(path):
    baseline = json.loads(path.read_text(encoding="utf-8"))
    assert baseline["machine"] and baseline["torch"] and re.fullmatch(r"[0-9a-f]{40}", baseline["commit"])
    assert baseline["isa"] in ("amx_bf16", "avx512_bf16", "avx512f", "avx2")
    assert set(baseline["runs"]) == RUNS
    for name, run in baseline["runs"].items():
        assert run["command"].startswith("imgcls train ") and "precision=fp32" in run["command"], name
        assert re.fullmatch(r"[0-9a-f]{64}", run["state_sha256"]), name
        rows = run["metrics_rows"]  # the usual columns, and a feature's own (ema_val_accuracy, ...), timings aside
        assert rows and all(METRIC_COLUMNS <= set(row) and not set(row) & TIMING_COLUMNS for row in rows), name
        assert [row["epoch"] for row in rows] == [str(i + 1) for i in range(len(rows))], name
    assert len({run["state_sha256"] for run in baseline["runs"].values()}) == len(RUNS)  # six different results


@pytest.mark.skipif(os.environ.get("IMGCLS_BITWISE") != "1",
                    reason="set IMGCLS_BITWISE=1 to run: six training runs take minutes, and bitwise equality of "
                           "float results holds only on the CPU kind and torch version the baseline was recorded "
                           "with (see the baseline's machine and torch)")
def test_the_six_runs_still_give_the_recorded_tensors_and_metrics():
    isa = this_isa()
    baseline = next((p for p in BASELINES if json.loads(p.read_text(encoding="utf-8"))["isa"] == isa), None)
    if baseline is None:
        pytest.skip(f"no baseline recorded on a CPU with {isa}: benchmarks/bitwise_baseline.py --record one")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check", str(baseline)], cwd=ROOT, capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, f"{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
