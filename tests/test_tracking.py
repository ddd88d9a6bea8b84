"""tracking=mlflow and TensorBoard: what a tracked run records is read back (MlflowClient, EventAccumulator) and
compared with the run directory's own files; a tracking failure never fails the run."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import (TINY_SETTINGS_NO_EPOCHS, assert_ok, assert_user_error, cli_env, read_csv, read_json,
                      run_cli, run_in_one_process)

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

SMALL = [*TINY_SETTINGS_NO_EPOCHS, "dataset.num_samples=200"]
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}


def local_client(cwd: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{cwd / 'outputs' / 'mlflow' / 'mlflow.db'}")


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A 2-epoch run with tracking=mlflow and tensorboard=true in a fresh folder (the local store under
    ./outputs/mlflow), then resumed to 3 epochs."""
    cwd = tmp_path_factory.mktemp("mlflow_run")
    run_dir = cwd / "outputs" / "train" / "run"
    first = run_cli("train", *SMALL, "epochs=2", "tracking=mlflow", "tracking.log_checkpoints=true",
                    "tensorboard=true", f"hydra.run.dir={run_dir}", cwd=cwd)
    assert_ok(first)
    saved = {"metrics": read_csv(run_dir / "metrics.csv"), "summary": read_json(run_dir / "summary.json"),
             "run_id": read_json(run_dir / "mlflow.json")["run_id"]}
    again = run_cli("train", f"resume={run_dir}", "epochs=3", "overwrite=true", *SMALL, "tracking=mlflow",
                    "tensorboard=true", cwd=cwd)
    assert_ok(again)
    return cwd, run_dir, saved


def test_mlflow_run_holds_the_run_directory(tracked):
    """params = the flattened config, per-epoch metrics = metrics.csv (step = epoch), test metrics = summary.json,
    tags, and the run directory's files as artifacts, in the local SQLite store."""
    cwd, run_dir, first = tracked
    client = local_client(cwd)
    run = client.get_run(first["run_id"])
    params = run.data.params
    assert params["model.name"] == "simple_cnn" and params["dataset.name"] == "synthetic"
    assert params["dataset.num_samples"] == "200" and params["tracking.backend"] == "mlflow"
    assert params["epochs"] == "2"  # a resume keeps what the run was first logged with
    tags = run.data.tags
    assert (tags["model"], tags["dataset"], tags["status"]) == ("simple_cnn", "synthetic", "completed")
    assert "tracking=mlflow" in tags["command"] and "resume=" not in tags["command"]  # the command that made it
    from imgcls_cli.rundir import git_commit

    assert tags.get("git_commit") == git_commit()  # this checkout's commit (no tag outside a checkout)
    rows = read_csv(run_dir / "metrics.csv")
    for column in rows[0]:
        if column == "epoch":
            continue
        expected = [(int(r["epoch"]), float(r[column])) for r in rows if r[column] != ""]
        got = history(client, run.info.run_id, column)
        assert [s for s, _ in got] == [s for s, _ in expected], column
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-5), column  # csv: 6 digits
    summary = read_json(run_dir / "summary.json")
    assert run.data.metrics["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(summary["best_val_accuracy"])
    eval_metrics = read_json(run_dir / "eval" / "metrics.json")
    assert run.data.metrics["test_f1_macro"] == pytest.approx(eval_metrics["f1_macro"])
    assert run.info.status == "FINISHED"
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "summary.json", "metrics.csv", "report.html", "eval", "plots", "checkpoints"} <= names
    assert "eval/confusion_matrix.png" in {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    local = client.download_artifacts(run.info.run_id, "summary.json", str(cwd / "download"))
    assert read_json(local) == summary


def test_resume_continues_the_same_mlflow_run(tracked):
    cwd, run_dir, first = tracked
    client = local_client(cwd)
    assert read_json(run_dir / "mlflow.json")["run_id"] == first["run_id"]
    assert len(client.search_runs([client.get_run(first["run_id"]).info.experiment_id])) == 1
    steps = [s for s, _ in history(client, first["run_id"], "train_loss")]
    assert steps == [1, 2, 3]
    assert client.get_run(first["run_id"]).data.metrics["epochs_completed"] == 3


@pytest.fixture(scope="module")
def tracked_sweep(tmp_path_factory) -> Path:
    """`imgcls train -m optimizer.lr=0.01,0.001 tracking=mlflow tensorboard=true`: one sweep that both trackers
    record (the mlflow parent run and its children; each job's TensorBoard hparams session)."""
    cwd = tmp_path_factory.mktemp("tracked_sweep")
    result = run_cli("train", "-m", "optimizer.lr=0.01,0.001", *SMALL, "epochs=1", "tracking=mlflow",
                     "tracking.experiment=sweeps", "tensorboard=true", f"hydra.sweep.dir={cwd / 'sweep'}", cwd=cwd)
    assert_ok(result)
    return cwd


def test_sweep_is_a_parent_run_with_a_child_per_job(tracked_sweep):
    client = local_client(tracked_sweep)
    experiment = client.get_experiment_by_name("sweeps")
    runs = client.search_runs([experiment.experiment_id])
    parent = read_json(tracked_sweep / "sweep" / "mlflow.json")["run_id"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert len(runs) == 3 and len(children) == 2
    assert sorted(r.data.params["optimizer.lr"] for r in children) == ["0.001", "0.01"]
    assert all(r.info.status == "FINISHED" and r.data.tags["status"] == "completed" for r in children)
    top = client.get_run(parent)
    assert top.info.status == "FINISHED" and top.data.tags["sweep"] == "true"
    assert {"summary.csv", "sweep_report.html"} <= {a.path for a in client.list_artifacts(parent)}
    for child in children:  # each job's folder records its own child run
        job = Path(child.data.tags["run_dir"])
        assert job.parent == (tracked_sweep / "sweep").resolve()
        assert read_json(job / "mlflow.json")["run_id"] == child.info.run_id


@pytest.fixture(scope="module")
def in_process(tmp_path_factory) -> dict:
    """The runs that start no other process, each `imgcls train ...` in one child process (run_in_one_process: the
    same exit status, stdout and stderr): a server that does not answer (mlflow told to give up at once), a run
    refused after it started, and three mistakes; each in a folder of its own."""
    base = tmp_path_factory.mktemp("tracking_in_process")
    calls = {"unreachable": (["train", *SMALL, "epochs=1", "tracking=mlflow", "tracking.uri=http://127.0.0.1:9",
                              f"hydra.run.dir={base / 'unreachable' / 'run'}"], base / "unreachable"),
             "failed": (["train", *SMALL, "dataset.max_train_samples=1", "tracking=mlflow",
                         f"hydra.run.dir={base / 'failed' / 'run'}"], base / "failed"),
             "group": (["train", "tracking=mlfow", *SMALL], base / "mistakes"),
             "key": (["train", "tracking.backend=mlfow", *SMALL], base / "mistakes"),
             "checkpoints": (["train", "tracking=mlflow", "tracking.log_checkpoints=yes", *SMALL], base / "mistakes")}
    return {"base": base, "results": run_in_one_process(calls, env={**cli_env(), **QUICK_HTTP})}


def test_unreachable_tracking_server_is_one_warning(in_process):
    """A tracking server that does not answer: the run completes as it would have, with one warning line."""
    result, run_dir = in_process["results"]["unreachable"], in_process["base"] / "unreachable" / "run"
    assert_ok(result)
    assert result.run_dir == run_dir
    assert read_json(run_dir / "summary.json")["status"] == "completed"
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "mlflow" in line.lower()]
    assert len(lines) == 1 and "tracking: mlflow failed" in lines[0], lines
    assert "Traceback" not in result.stderr


def test_tracking_mistakes_are_one_line(in_process):
    results, cwd = in_process["results"], in_process["base"] / "mistakes"
    assert "mlflow" in assert_user_error(results["group"], "tracking", "mlfow")
    assert "Did you mean mlflow?" in assert_user_error(results["key"], "tracking backend")
    assert_user_error(results["checkpoints"], "tracking.log_checkpoints must be true or false")
    hidden = cwd / "no_mlflow"
    hidden.mkdir()
    for module in ("mlflow", "tensorboard"):
        (hidden / f"{module}.py").write_text(f"raise ImportError(\"No module named '{module}'\")\n")
    env = {**cli_env(), "PYTHONPATH": str(hidden)}
    missing = run_in_one_process({"mlflow": (["train", "tracking=mlflow", *SMALL], cwd),
                                  "tensorboard": (["train", "tensorboard=true", *SMALL], cwd)}, env=env)
    line = assert_user_error(missing["mlflow"], "pip install 'imgcls[mlflow]'")
    assert line.startswith("error: tracking=mlflow needs the mlflow package")
    assert_user_error(missing["tensorboard"], "needs the tensorboard package: pip install 'imgcls[tensorboard]'")
    assert not (cwd / "outputs" / "mlflow").exists()  # refused before anything was recorded


def documented_command(program: str) -> list[str]:
    """The shell command of docs/tracking.md that starts with `program`, split into words."""
    import shlex

    text = (Path(__file__).resolve().parents[1] / "docs" / "tracking.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith(f"{program} ")]
    assert len(lines) == 1, f"docs/tracking.md shows {len(lines)} `{program}` commands"
    return shlex.split(lines[0])


def test_the_documented_mlflow_ui_command_shows_the_run(tracked):
    """docs/tracking.md's `mlflow ui` line, run in the folder the run was started in, serves the run."""
    import json
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    cwd, _, first = tracked
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = documented_command("mlflow")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", *argv[1:], "--host", "127.0.0.1", "--port",
                               str(port)], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={first['run_id']}"
    try:
        deadline, answer = time.monotonic() + 120, None
        while answer is None and time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    answer = json.loads(response.read())
            except OSError:
                time.sleep(1)
        assert answer is not None, f"mlflow ui did not answer (exit status {server.poll()})"
        assert answer["run"]["info"]["run_id"] == first["run_id"]
        assert answer["run"]["info"]["status"] == "FINISHED"
    finally:
        server.terminate()
        server.wait(timeout=30)


def events(folder: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def hparams_logged(folder: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """The hparams plugin's session: (the hparams, the metrics' last values)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    board = events(folder)
    content = board.PluginTagToContent("hparams")
    starts = [plugin_data_pb2.HParamsPluginData.FromString(c).session_start_info for c in content.values()]
    start = next(s for s in starts if s.hparams)
    values = {k: (v.string_value or v.number_value or v.bool_value) for k, v in start.hparams.items()}
    metrics = {tag: board.Scalars(tag)[-1].value for tag in board.Tags()["scalars"] if tag.startswith("hparam/")}
    return values, metrics


def test_tensorboard_holds_epochs_steps_images_and_hparams(tracked):
    """tensorboard/: every metrics.csv column at step = epoch, the augment preview and the confusion matrix;
    tensorboard/steps: each optimizer step's loss and lr, whose image-weighted mean over an epoch is its
    train_loss. The resumed run's events follow on without repeating a step."""
    _, run_dir, _ = tracked
    rows = read_csv(run_dir / "metrics.csv")
    board = events(run_dir / "tensorboard")
    for column in rows[0]:
        expected = [(int(r["epoch"]), float(r[column])) for r in rows if r[column] != "" and column != "epoch"]
        got = [(e.step, e.value) for e in board.Scalars(column)] if expected else []
        assert [s for s, _ in got] == [s for s, _ in expected], column
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-5), column
    assert {"augment_preview", "confusion_matrix"} <= set(board.Tags()["images"])
    matrix = board.Images("confusion_matrix")[-1]
    assert matrix.step == 3 and matrix.width > 100 and matrix.height > 100
    steps = events(run_dir / "tensorboard" / "steps")
    losses, lrs = steps.Scalars("train/loss"), steps.Scalars("train/lr")
    per_epoch = len(losses) // 3
    assert [e.step for e in losses] == list(range(1, 3 * per_epoch + 1)) and per_epoch >= 3
    assert [e.step for e in lrs] == [e.step for e in losses]
    for i, row in enumerate(rows):  # equal batches: the epoch's loss is the mean of its steps' losses
        epoch_losses = [e.value for e in losses[i * per_epoch:(i + 1) * per_epoch]]
        assert sum(epoch_losses) / per_epoch == pytest.approx(float(row["train_loss"]), rel=1e-4)
        assert lrs[i * per_epoch].value == pytest.approx(float(row["lr"]), rel=1e-5)  # the epoch's first lr
    assert lrs[-1].value < lrs[0].value  # cosine
    values, metrics = hparams_logged(run_dir / "tensorboard")
    summary = read_json(run_dir / "summary.json")
    assert values["model"] == "simple_cnn" and values["dataset"] == "synthetic"
    assert metrics["hparam/test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert metrics["hparam/best_val_accuracy"] == pytest.approx(summary["best_val_accuracy"])


def test_tensorboard_hparams_compare_a_sweeps_jobs(tracked_sweep):
    """imgcls train -m optimizer.lr=... tensorboard=true: each job's hparams session names its lr, against its own
    test accuracy (what TensorBoard's HPARAMS tab lists for the sweep folder)."""
    jobs = sorted((tracked_sweep / "sweep").glob("*/tensorboard"))
    assert len(jobs) == 2
    seen = {}
    for folder in jobs:
        values, metrics = hparams_logged(folder)
        summary = read_json(folder.parent / "summary.json")
        assert metrics["hparam/test_accuracy"] == pytest.approx(summary["test_accuracy"])
        seen[values["optimizer.lr"]] = metrics["hparam/test_accuracy"]
    assert sorted(seen) == pytest.approx([0.001, 0.01])


def test_the_documented_tensorboard_command_finds_the_run(tracked):
    """docs/tracking.md's `tensorboard --logdir` line, in the folder the run was started in, finds its event
    files (--inspect: what the server would load, without serving it)."""
    import subprocess

    cwd, run_dir, _ = tracked
    argv = documented_command("tensorboard")
    shown = subprocess.run([*argv, "--inspect"], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout + shown.stderr
    assert f"{run_dir.relative_to(cwd) / 'tensorboard' / 'steps'}" in text
    assert all(tag in text for tag in ("train_loss", "confusion_matrix", "augment_preview", "train/lr"))


def test_a_run_that_fails_is_a_failed_mlflow_run(in_process):
    """A run refused after it started (one class in the training split) is recorded, as failed, with its
    config and summary.json: never a lost run."""
    cwd = in_process["base"] / "failed"
    assert_user_error(in_process["results"]["failed"], "one class")
    client = local_client(cwd)
    run = client.get_run(read_json(cwd / "run" / "mlflow.json")["run_id"])
    assert run.info.status == "FAILED" and run.data.tags["status"] == "failed"
    assert read_json(cwd / "run" / "summary.json")["status"] == "failed"
    assert {"config.yaml", "summary.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
