"""The suite's warm CLI server (tests/forkcli.py) gives what a fresh `python -m imgcls_cli` gives: the same exit
status, stdout and stderr, in the call's folder and environment; and a call that needs a fresh interpreter gets one."""
from __future__ import annotations

import subprocess
import sys

import pytest

import forkcli
from conftest import ROOT, TINY_SETTINGS_NO_EPOCHS, cli_env, read_json, run_cli

CALLS = {
    "version": ["--version"],
    "mistake": ["train", "model=resnt"],
    "missing checkpoint": ["eval", "checkpoint=missing.pt"],
    "composed": ["train", "epochs=3", "--cfg", "job"],
}


@pytest.fixture(scope="module")
def server():
    served = forkcli.ForkServer(cli_env(), ROOT)
    yield served
    served.close()


def fresh(args: list[str], cwd) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "imgcls_cli", *args], cwd=cwd, env=cli_env(), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("name", CALLS)
def test_a_forked_call_prints_and_exits_as_a_fresh_interpreter_does(server, name, tmp_path):
    args = CALLS[name]
    status, out, err = server.run(args, tmp_path, cli_env(), 300, tmp_path)
    assert (status, out.decode(), err.decode()) == fresh(args, tmp_path)


def test_a_forked_run_writes_its_run_directory_where_it_was_started(server, tmp_path):
    status, out, _ = server.run(["train", *TINY_SETTINGS_NO_EPOCHS, "epochs=1"], tmp_path, cli_env(), 300, tmp_path)
    assert status == 0
    run_dir = tmp_path / out.decode().splitlines()[-1].removeprefix("Run directory: ")
    assert run_dir.parent == tmp_path / "outputs" / "train"
    assert read_json(run_dir / "summary.json")["command"].startswith("imgcls train dataset=synthetic")


def test_a_call_that_changes_how_an_interpreter_starts_gets_a_fresh_one(tmp_path):
    env = cli_env()
    assert run_cli("--version", cwd=tmp_path).returncode == 0
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "imgcls_cli.py").write_text("raise SystemExit(7)\n")  # shadows the package in a fresh interpreter only
    result = run_cli("--version", cwd=tmp_path, env={**env, "PYTHONPATH": str(hidden)})
    assert result.returncode == 7
    assert not forkcli.startup_view({**env, "PYTHONPATH": str(hidden)}) == forkcli.startup_view(env)


def test_an_exception_is_a_traceback_and_status_1_and_a_timeout_kills_the_call(server, tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("import atexit, sys\natexit.register(lambda: print('atexit ran'))\nraise RuntimeError('boom')\n")
    status, out, err = server.run([], tmp_path, cli_env(), 60, tmp_path, script=script)
    assert status == 1 and out.decode() == "atexit ran\n"
    assert err.decode().splitlines()[-1] == "RuntimeError: boom" and "Traceback" in err.decode()
    sleeper = tmp_path / "sleeps.py"
    sleeper.write_text("import time\ntime.sleep(600)\n")
    with pytest.raises(subprocess.TimeoutExpired):
        server.run([], tmp_path, cli_env(), 2, tmp_path, script=sleeper)
    status, out, _ = server.run(["--version"], tmp_path, cli_env(), 60, tmp_path)  # the server goes on serving
    assert status == 0 and out.decode().startswith("imgcls ")
