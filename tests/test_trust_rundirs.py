"""Run directories a user can trust: unique, locked while a run uses them, never overwritten unless asked
(overwrite=true), a completed run never resumed by mistake, stale temporary files cleaned on resume, and a
directory that cannot be made is one line.

One tiny training run is shared (copied per test); the refusals are cheap CLI calls, run one after the other by
cli.main in one child process (conftest.run_in_one_process: the same exit status and stderr as typed). Real
subprocesses hold and contend for the locks.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conftest import Result, assert_ok, assert_user_error, cli_env, read_json, run_cli, run_in_one_process

# Smaller than conftest's TINY: these tests are about the files, not what the model learns.
ONE_EPOCH = ["dataset=synthetic", "dataset.num_samples=150", "dataset.image_size=16", "batch_size=32",
             "model.widths=[4,8,8]", "model.hidden=16", "epochs=1"]
LOCK = ".imgcls.lock"


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (hidden ones included) and its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> tuple[Result, list[Path]]:
    """`imgcls train` with no hydra.run.dir while another run holds <time>_simple_cnn_synthetic for every second
    this one could start in. A completed run with an EMA (so it holds checkpoints/best_ema.pt)."""
    cwd = tmp_path_factory.mktemp("default")
    train = cwd / "outputs" / "train"
    now = datetime.now()
    taken = []
    for second in range(-2, 180):
        folder = train / f"{(now + timedelta(seconds=second)):%Y-%m-%d_%H-%M-%S}_simple_cnn_synthetic"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text('{"status": "running"}\n')
        taken.append(folder)
    result = run_cli("train", *ONE_EPOCH, "ema.decay=0.9", cwd=cwd)
    assert_ok(result)
    return result, taken


@pytest.fixture(scope="module")
def finished(default_run) -> Path:
    return default_run[0].run_dir


def copy_of(run: Path, where: Path) -> Path:
    shutil.copytree(run, where)
    return where


# ============================================================================================ (b) the lock
def test_two_runs_into_one_directory_at_once_one_is_refused_and_the_other_is_intact(tmp_path):
    run_dir = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "imgcls_cli", "train", *ONE_EPOCH, f"hydra.run.dir={run_dir}"],
                             cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "config.yaml").is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        first.send_signal(signal.SIGSTOP)  # the first run holds the directory for as long as the second one needs
        assert first.poll() is None, "the first run ended before it could be held"
        before = snapshot(run_dir)
        assert LOCK in before
        second = run_cli("train", *ONE_EPOCH, "seed=1", f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert_user_error(second, str(run_dir), "in use by another run", f"pid {first.pid}")
        assert snapshot(run_dir) == before  # not a byte of the first run's files changed
    finally:
        first.send_signal(signal.SIGCONT)
        stdout, stderr = first.communicate(timeout=240)
    assert first.returncode == 0, stderr.decode()
    assert read_json(run_dir / "summary.json")["status"] == "completed"
    assert "seed: 0" in (run_dir / "config.yaml").read_text()
    assert "seed=1" not in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert not (run_dir / LOCK).exists()  # let go when the run ended


def test_a_lock_dies_with_its_process_and_resume_auto_leaves_a_live_run_alone(tmp_path):
    """SIGKILL gives no chance to clean up: the kernel drops the flock with the process, so the directory is free.
    While the process lives, resume=auto does not pick its run."""
    from imgcls_cli.commands.resume import newest_unfinished
    from imgcls_cli.errors import UserError
    from imgcls_cli.commands.runlock import acquire, release

    run_dir = tmp_path / "outputs" / "train" / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text("[]\n")
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"a checkpoint")
    (run_dir / "summary.json").write_text('{"status": "running"}\n')
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from imgcls_cli.commands.runlock import acquire; acquire(Path(sys.argv[1])); "
                               "print('held', flush=True); time.sleep(120)", str(run_dir)],
                              stdout=subprocess.PIPE, env=cli_env())
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(UserError, match=rf"in use by another run \(pid {holder.pid}\)"):
            acquire(run_dir)
        assert newest_unfinished(run_dir.parent, []) is None  # it is being trained: not a run to continue
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert (run_dir / LOCK).exists() and newest_unfinished(run_dir.parent, []) == run_dir
    acquire(run_dir)  # the stale lock file is there, its lock is not
    release(run_dir)
    assert not (run_dir / LOCK).exists()


# ============================================================================================ (a) unique directories
def test_a_default_run_directory_taken_in_the_same_second_gets_the_next_free_name(default_run):
    result, taken = default_run
    train = result.cwd / "outputs" / "train"
    run_dir = result.run_dir.resolve()
    assert run_dir.parent == train.resolve() and run_dir.name.endswith("_simple_cnn_synthetic_2"), run_dir
    assert run_dir.name.removesuffix("_2") in {p.name for p in taken}
    for folder in taken:  # the other runs' folders are as they were
        assert [p.name for p in folder.iterdir()] == ["summary.json"]
        assert folder.joinpath("summary.json").read_text() == '{"status": "running"}\n'
    assert read_json(run_dir / "summary.json")["status"] == "completed"


def test_processes_claiming_one_name_at_once_get_one_directory_each(tmp_path):
    code = ("import sys; from imgcls_cli.commands.runlock import unique_dir; "
            "print(unique_dir('outputs/train/2030-01-01_00-00-00_m_d'), flush=True)")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE, env=cli_env())
             for _ in range(4)]
    names = [p.communicate(timeout=60)[0].decode().strip() for p in procs]
    base = "outputs/train/2030-01-01_00-00-00_m_d"
    assert sorted(names) == sorted([base, f"{base}_2", f"{base}_3", f"{base}_4"])
    assert all((tmp_path / n).is_dir() for n in names)


def test_the_resolver_gives_one_directory_per_process_however_often_it_is_resolved(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from imgcls_cli.paths import CONF_DIR
    from imgcls_cli.commands.runlock import claim

    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["model=lenet5"], return_hydra_config=True)
    first = OmegaConf.select(cfg, "hydra.run.dir")
    assert OmegaConf.select(cfg, "hydra.run.dir") == first and first.endswith("_lenet5_digits")
    assert (tmp_path / first).is_dir() and first.startswith("outputs/train/")
    assert claim(first) == f"{first}_2"  # another claim of the same name (another run) gets its own


# ============================================================================================ (c) finished runs
def test_a_rerun_or_resume_into_a_finished_run_is_refused_and_leaves_it_byte_identical(finished, tmp_path):
    run_dir = copy_of(finished, tmp_path / "run")
    before = snapshot(run_dir)
    results = run_in_one_process({
        "rerun": (["train", *ONE_EPOCH, f"hydra.run.dir={run_dir}"], tmp_path),
        "resume": (["train", *ONE_EPOCH, "epochs=2", f"resume={run_dir}"], tmp_path),
        "resume_last": (["train", *ONE_EPOCH, f"resume={run_dir / 'checkpoints' / 'last.pt'}"], tmp_path),
        "eval_into_it": (["eval", f"checkpoint={finished / 'checkpoints' / 'best.pt'}", f"hydra.run.dir={run_dir}"],
                         tmp_path),
        "overwrite_what_it_reads": (["eval", f"checkpoint={run_dir / 'checkpoints' / 'best.pt'}",
                                     f"hydra.run.dir={run_dir}", "overwrite=true"], tmp_path),
    })
    assert_user_error(results["rerun"], str(run_dir), "already holds a finished run", "completed", "overwrite=true")
    assert_user_error(results["resume"], f"resume: {run_dir} completed", "init=", "overwrite=true")
    assert_user_error(results["resume_last"], "completed", "init=")
    assert_user_error(results["eval_into_it"], "already holds a finished run", "overwrite=true")
    assert_user_error(results["overwrite_what_it_reads"], "overwrite=true would delete", "checkpoint=")
    assert snapshot(run_dir) == before


def test_overwrite_true_replaces_the_finished_run_whole(finished, tmp_path):
    run_dir = copy_of(finished, tmp_path / "run")
    assert (run_dir / "checkpoints" / "best_ema.pt").is_file()
    result = run_cli("train", *ONE_EPOCH, "seed=3", "overwrite=true", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert_ok(result)
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "completed" and summary["seed"] == 3
    assert not (run_dir / "checkpoints" / "best_ema.pt").exists()  # nothing of the old run is left beside the new
    assert "seed: 3" in (run_dir / "config.yaml").read_text()
    assert (run_dir / "train.log").read_text().count("epoch 1/1") == 1
    assert not (run_dir / LOCK).exists()


def test_resume_removes_the_temporary_files_interrupted_writes_left(finished, tmp_path):
    """A run SIGKILLed in the middle of writing last.pt leaves `.last.pt.<pid>.tmp`: the resume removes it."""
    run_dir = copy_of(finished, tmp_path / "run")
    summary = read_json(run_dir / "summary.json")
    (run_dir / "summary.json").write_text(json.dumps({**summary, "status": "running"}))  # killed before it ended
    stale = [run_dir / "checkpoints" / ".last.pt.4194000.tmp", run_dir / "eval" / ".metrics.json.77.tmp",
             run_dir / f".summary.json.{os.getpid()}.tmp"]  # a live pid too: the lock says no one else writes here
    for path in stale:
        path.write_bytes(b"partial")
    keep = run_dir / ".notes.tmp"
    keep.write_text("not a temporary file of an atomic write")
    rerun = run_cli("train", *ONE_EPOCH, f"hydra.run.dir={run_dir}", cwd=tmp_path)  # not a resume: refused
    assert_user_error(rerun, "did not finish", f"resume={run_dir}", "overwrite=true")
    assert all(p.exists() for p in stale)
    result = run_cli("train", *ONE_EPOCH, "ema.decay=0.9", f"resume={run_dir}", cwd=tmp_path)
    assert_ok(result)
    assert "removed 3 temporary file(s)" in result.stdout
    assert not any(p.exists() for p in stale) and keep.exists()
    assert read_json(run_dir / "summary.json")["status"] == "completed"


# ============================================================================================ sweeps, eval, predict
def test_unusable_directories_are_one_line(tmp_path, finished):
    sweep = tmp_path / "sweep"
    (sweep / "0_seed-0" / ".hydra").mkdir(parents=True)
    (sweep / "summary.csv").write_text("job,overrides,status\n0,seed=0,completed\n")
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "metrics.json").write_text('{"accuracy": 0.5}\n')
    before = {"sweep": snapshot(sweep), "eval": snapshot(eval_dir)}
    (tmp_path / "a_file").write_text("not a folder")
    project = tmp_path / "project"  # a user's folder that happens to hold a checkpoint: not a run directory
    (project / "checkpoints").mkdir(parents=True)
    (project / "checkpoints" / "model.pt").write_bytes(b"weights")
    (project / "notes.txt").write_text("mine")
    before["project"] = snapshot(project)
    ckpt = f"checkpoint={finished / 'checkpoints' / 'best.pt'}"
    long_name = "outputs/" + "r" * 300
    results = run_in_one_process({
        "proc": (["train", *ONE_EPOCH, "hydra.run.dir=/proc/imgcls/run"], tmp_path),
        "sys": (["train", *ONE_EPOCH, "hydra.run.dir=/sys/imgcls-run"], tmp_path),
        "long": (["train", *ONE_EPOCH, f"hydra.run.dir={long_name}"], tmp_path),
        "file": (["train", *ONE_EPOCH, f"hydra.run.dir={tmp_path / 'a_file'}"], tmp_path),
        "eval_proc": (["eval", ckpt, "hydra.run.dir=/proc/imgcls/eval"], tmp_path),
        "predict_long": (["predict", ckpt, f"inputs={tmp_path}", f"hydra.run.dir={long_name}"], tmp_path),
        "sweep_proc": (["train", "-m", "seed=0,1", *ONE_EPOCH, "hydra.sweep.dir=/proc/imgcls/sweep"], tmp_path),
        "sweep_done": (["train", "-m", "seed=0,1", *ONE_EPOCH, f"hydra.sweep.dir={sweep}"], tmp_path),
        "eval_done": (["eval", ckpt, f"hydra.run.dir={eval_dir}"], tmp_path),
        "cfg": (["train", "--cfg", "job"], tmp_path / "printing"),
        "not_a_run": (["train", *ONE_EPOCH, "overwrite=true", f"hydra.run.dir={project}"], tmp_path),
    })
    assert_user_error(results["proc"], "/proc/imgcls/run", "cannot create")
    assert_user_error(results["sys"], "/sys/imgcls-run", "cannot create")
    assert_user_error(results["long"], "hydra.run.dir", "too long", "shorter")
    assert_user_error(results["file"], "a_file", "not a directory")
    assert_user_error(results["eval_proc"], "/proc/imgcls/eval", "cannot create")
    assert_user_error(results["predict_long"], "too long")
    assert_user_error(results["sweep_proc"], "hydra.sweep.dir", "cannot create")
    assert_user_error(results["sweep_done"], str(sweep), "already holds a sweep", "overwrite=true")
    assert_user_error(results["eval_done"], "metrics.json", "overwrite=true")
    assert_user_error(results["not_a_run"], "not an imgcls run", "overwrite=true empties only run directories")
    assert {"sweep": snapshot(sweep), "eval": snapshot(eval_dir), "project": snapshot(project)} == before
    assert_ok(results["cfg"])
    assert not (tmp_path / "printing" / "outputs").exists()  # printing the config makes no run directory


def test_overwrite_true_empties_a_finished_sweep_directory_before_the_sweep_starts(tmp_path):
    """What `imgcls train -m ... hydra.sweep.dir=DIR overwrite=true` does before its first job (in-process: the
    callback the sweep runs); without overwrite=true the same call refuses (the CLI refusal is tested above)."""
    from omegaconf import OmegaConf

    from imgcls_cli.commands.runlock import RunDirGuard, release

    sweep = tmp_path / "sweep"
    (sweep / "0_seed-0" / ".hydra").mkdir(parents=True)
    (sweep / "0_seed-0" / "summary.json").write_text('{"status": "completed"}\n')
    (sweep / "multirun.yaml").write_text("old: sweep\n")
    config = OmegaConf.create({"overwrite": False, "seed": 0, "hydra": {"sweep": {"dir": str(sweep)}}})
    with pytest.raises(SystemExit) as refused:
        RunDirGuard().on_multirun_start(config)
    assert refused.value.code == 2 and (sweep / "multirun.yaml").is_file() and not (sweep / LOCK).exists()
    config.overwrite = True
    RunDirGuard().on_multirun_start(config)
    try:
        assert sorted(p.name for p in sweep.iterdir()) == [LOCK]  # the old jobs are gone, the new sweep holds it
    finally:
        release(sweep)
    assert list(sweep.iterdir()) == []


def test_runs_one_after_the_other_in_one_process_get_a_directory_each(tmp_path, monkeypatch):
    """The CLI called in-process (as the docs check does): a second run in the same second claims its own."""
    from imgcls_cli.commands.runlock import acquire, release, unique_dir

    monkeypatch.chdir(tmp_path)
    first = unique_dir("outputs/eval/2030-01-01_00-00-00")
    assert unique_dir("outputs/eval/2030-01-01_00-00-00") == first  # resolved again during the same run
    acquire(Path(first))
    release(Path(first))  # the run ended
    second = unique_dir("outputs/eval/2030-01-01_00-00-00")
    assert second == f"{first}_2" and (tmp_path / second).is_dir()
    release(Path(second))


def test_a_sweep_whose_jobs_fail_in_process_says_which_returns_1_and_lets_go_of_its_directory(tmp_path, monkeypatch,
                                                                                                 capsys):
    """The CLI called in-process: the summary is written, the failed jobs named in the last line, exit status 1,
    and the sweep directory unlocked for whatever runs next in this process."""
    from imgcls_cli import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # the CLI hands argv to Hydra through sys.argv
    for name in ("IMGCLS_COMMAND", "HYDRA_FULL_ERROR", "OPENCV_LOG_LEVEL"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    sweep = tmp_path / "sweep"
    status = cli.main(["train", "-m", "seed=-1,-2", *ONE_EPOCH, f"hydra.sweep.dir={sweep}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert status == 1, err
    assert err[-1] == "error: 2 sweep job(s) failed: 0, 1"
    assert (sweep / "summary.csv").is_file() and not (sweep / LOCK).exists()
