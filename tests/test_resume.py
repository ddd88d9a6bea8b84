"""Runs that survive: SIGKILL mid-epoch then `resume=` ends with weights bitwise equal to an uninterrupted run;
SIGTERM writes last.pt, records `interrupted` and exits 143. Real subprocesses, as a user's runs are."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import (assert_ok, assert_user_error, cli_env, read_csv, read_json, run_cli,
                      wait_for_mid_epoch_checkpoint)

SETTINGS = ["dataset.max_train_samples=600", "epochs=3", "augment=mixup", "checkpoint.every_n_steps=3", "ema.decay=0.9",
            "optimizer.accumulate_steps=2"]


def start(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "imgcls_cli", "train", *SETTINGS, *args], cwd=cwd,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The model's and the EMA's weights in last.pt."""
    last = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    return {**last["state_dict"], **{f"ema.{k}": v for k, v in last["ema"]["state_dict"].items()}}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("whole")
    assert_ok(run_cli("train", *SETTINGS, f"hydra.run.dir={base / 'run'}", cwd=base))
    return base / "run"


def test_sigkill_mid_epoch_then_resume_auto_gives_bitwise_equal_weights(tmp_path, uninterrupted):
    proc = start(tmp_path)
    try:
        wait_for_mid_epoch_checkpoint(next_last(tmp_path, proc), proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    run_dir = next((tmp_path / "outputs" / "train").iterdir())
    assert read_json(run_dir / "summary.json")["status"] == "running"  # it never got to say otherwise
    resumed = run_cli("train", *SETTINGS, "resume=auto", cwd=tmp_path)
    assert_ok(resumed)
    assert "resume=auto: continuing" in resumed.stdout and resumed.run_dir.resolve() == run_dir.resolve()
    assert len(list((tmp_path / "outputs" / "train").iterdir())) == 1  # continued in place, no new run
    reference, ours = weights(uninterrupted), weights(run_dir)
    assert ours.keys() == reference.keys() and all(torch.equal(ours[k], reference[k]) for k in ours)
    columns = ["epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy"]
    assert ([[r[c] for c in columns] for r in read_csv(run_dir / "metrics.csv")]
            == [[r[c] for c in columns] for r in read_csv(uninterrupted / "metrics.csv")])
    assert read_json(run_dir / "summary.json")["status"] == "completed"


def next_last(cwd: Path, proc: subprocess.Popen, timeout: float = 60) -> Path:
    """checkpoints/last.pt of the one run the process makes under cwd/outputs/train."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        runs = list((cwd / "outputs" / "train").glob("*"))
        if runs:
            return runs[0] / "checkpoints" / "last.pt"
        time.sleep(0.01)
    raise AssertionError("the run made no run directory")


def test_sigterm_saves_last_pt_records_interrupted_and_resume_path_finishes_it(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    proc = start(tmp_path, f"hydra.run.dir={run_dir}")
    try:
        wait_for_mid_epoch_checkpoint(run_dir / "checkpoints" / "last.pt", proc)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr.decode()
    assert "Traceback" not in stderr.decode() and f"resume={run_dir}" in stderr.decode()
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "interrupted" and "SIGTERM" in summary["error"]
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["position"] is not None
    assert_ok(run_cli("train", *SETTINGS, f"resume={run_dir / 'checkpoints' / 'last.pt'}", cwd=tmp_path))
    reference, ours = weights(uninterrupted), weights(run_dir)
    assert all(torch.equal(ours[k], reference[k]) for k in ours)


def test_resume_of_a_path_without_a_checkpoint_is_one_line(tmp_path):
    assert_user_error(run_cli("train", f"resume={tmp_path / 'nothing'}", cwd=tmp_path), "resume=", "last.pt")


def test_a_resume_with_other_epochs_says_what_changes(caplog):
    from imgcls_cli.engine.resume import warn_changed_settings

    saved = {"epochs": 10, "schedule": {"name": "cosine"}, "optimizer": {"lr": 0.1}, "batch_size": 64}
    with caplog.at_level("WARNING", logger="imgcls"):
        warn_changed_settings(saved, {**saved, "epochs": 20})
    assert len(caplog.records) == 1 and "epochs was 10 and is now 20" in caplog.text


def test_a_run_directory_that_cannot_take_checkpoints_is_one_line_and_a_failed_run(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").write_text("a file where the checkpoints folder should be")
    result = run_cli("train", "dataset.max_train_samples=200", "epochs=1", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert_user_error(result, "cannot write checkpoint", "checkpoints")
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "failed" and "cannot write checkpoint" in summary["error"]
