"""`python -m imgcls_cli ARGS` as a process of its own, without paying the interpreter's start-up for each call.

A CLI call costs ~4-6 s of start-up on 2 cores before it does anything (the interpreter, torch, torchvision, Hydra,
OpenCV, scikit-learn), and the suite makes hundreds of them. One server per test process imports those modules
once and forks a child for each call. The child is the command as a user runs it: its own process with the
call's working directory, environment and argv, stdin from /dev/null, its own stdout and stderr (file
descriptors 1 and 2, so what native libraries print is captured too); it runs `imgcls_cli/__main__.py` as
`python -m` does and exits as the interpreter does (threads joined, atexit handlers run, streams flushed), with
the exit status a user would see (a traceback is status 1; a signal is -N, as subprocess reports it).

The server runs no command itself and no torch operation (so no thread pool exists when it forks). A call whose
environment differs from the server's in what an interpreter reads when it starts or loads its libraries
(PYTHON*, thread counts, OpenCV's pixel limit, library paths) is not served: run_cli then starts a fresh
interpreter, as it does when the server is switched off (IMGCLS_TEST_FRESH_INTERPRETER=1) or coverage measures
the run (coverage follows subprocesses, not forks).

Protocol (JSON lines): the client writes {"args", "cwd", "env", "stdout", "stderr", "script"}; the server answers
{"pid": N} once the child exists and {"status": S} when it has ended.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

# What an interpreter or a library reads once, when it starts or loads: a call that sets these differently needs
# a fresh interpreter.
STARTUP_PREFIXES = ("PYTHON", "OMP_", "MKL_", "KMP_", "OPENBLAS_", "OPENCV_", "LD_", "CUDA_", "TORCH", "PYTORCH_",
                    "MPL", "COV_CORE", "COVERAGE", "HYDRA_", "NO_COLOR", "FORCE_COLOR", "TERM", "COLUMNS", "LINES")
# Every command imports these (cli.main imports the rest lazily); importing them runs no torch operation. The
# package's own modules are imported too (none imports an optional extra when it loads).
PRELOAD = ["torch", "torchvision", "numpy", "omegaconf", "hydra", "hydra._internal.utils", "cv2", "PIL.Image",
           "sklearn.metrics", "matplotlib", "rich.console", "rich.table"]


def startup_view(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(STARTUP_PREFIXES)}


# ------------------------------------------------------------------------------------------------ the server side
def _preload() -> None:
    import importlib
    import pkgutil

    import imgcls_cli

    package = [m.name for m in pkgutil.walk_packages(imgcls_cli.__path__, "imgcls_cli.")
               if not m.name.endswith("__main__")]
    for name in [*PRELOAD, *package]:
        try:
            importlib.import_module(name)
        except ImportError:  # a part that needs what is not installed: the child imports it itself, as a user's does
            pass


def _become_the_command(request: dict) -> None:
    """In the forked child: take the call's streams, place and environment, then run imgcls as `python -m` does."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    os.close(devnull)
    sys.stdin = open(0, closefd=False)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    import runpy

    script = request.get("script")
    sys.argv = [script or "imgcls_cli", *request["args"]]
    try:
        if script:  # `python SCRIPT ARGS`
            runpy.run_path(script, run_name="__main__")
        else:  # `python -m imgcls_cli ARGS`: __main__ raises SystemExit with main()'s status
            runpy.run_module("imgcls_cli", run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        sys.excepthook(*sys.exc_info())
        status = 1
    _exit(status)


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _exit(status: int) -> None:
    """The interpreter's exit as far as a command can tell (threads joined, atexit handlers, streams flushed),
    without tearing down every loaded module one by one: that alone takes ~2 s with torch loaded."""
    import atexit
    import threading

    threading._shutdown()  # what Py_Finalize does first: wait for the threads that are not daemons
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def serve() -> None:
    _preload()
    reply = sys.stdout
    print(json.dumps({"ready": os.getpid()}), file=reply, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                _become_the_command(request)  # never returns: the child ends in os._exit
            except BaseException:  # noqa: BLE001 - taking the call's folder or streams failed: say so, end the child
                import traceback

                traceback.print_exc()
                os._exit(1)
        print(json.dumps({"pid": pid}), file=reply, flush=True)
        _, wait_status = os.waitpid(pid, 0)
        print(json.dumps({"status": os.waitstatus_to_exitcode(wait_status)}), file=reply, flush=True)


# ------------------------------------------------------------------------------------------------ the client side
class ForkServer:
    """One warm server for this test process; `run()` returns (exit status, stdout bytes, stderr bytes)."""

    def __init__(self, env: dict[str, str], root: Path) -> None:
        self.startup = startup_view(env)
        server_env = dict(env)
        server_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root / "tests"), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen([sys.executable, "-c", "import forkcli; forkcli.serve()"], env=server_env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(root), text=True,
                                     bufsize=1)
        self._read(timeout=300)  # {"ready": pid}

    def serves(self, env: dict[str, str]) -> bool:
        return self.proc.poll() is None and startup_view(env) == self.startup

    def _read(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the CLI fork server ended (exit {self.proc.wait()})")
        return json.loads(line)

    def run(self, args: list[str], cwd: Path, env: dict[str, str], timeout: float, scratch: Path,
            script: Path | None = None) -> tuple[int, bytes, bytes]:
        """`python -m imgcls_cli ARGS` (or `python SCRIPT ARGS`) in cwd: (exit status, stdout, stderr)."""
        out, err = scratch / "stdout", scratch / "stderr"
        request = {"args": args, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err),
                   "script": str(script) if script else None}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        pid = self._read(timeout=60)["pid"]
        deadline = time.monotonic() + timeout
        try:
            status = self._read(timeout=max(0.0, deadline - time.monotonic()))["status"]
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            self._read(timeout=60)
            raise subprocess.TimeoutExpired(["imgcls", *args], timeout) from None
        return status, out.read_bytes(), err.read_bytes()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
