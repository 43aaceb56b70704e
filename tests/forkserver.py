"""Runs the ``transfuse`` console script in processes forked from one server that has already
imported the heavy libraries (torch, timm, scikit-learn, lightning, transformers, ...), so a CLI
test does not pay 3-5 s of imports per call. Every call is still a process of its own: its own
environment (``PYTHONPATH`` included), working directory, stdin from /dev/null, stdout and stderr,
exit code, and process group (killed whole on a timeout). transfuse itself is imported afresh in
each call, so what it reads from the environment at import time is read per call.

``TRANSFUSE_TEST_FORKSERVER=0`` runs every call as a plain subprocess instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

PRELOAD = ("numpy", "scipy", "PIL", "torch", "torchvision", "timm", "sklearn", "lightning", "transformers",
           "tokenizers", "onnx", "onnxruntime", "matplotlib", "safetensors", "rich", "typer", "tqdm", "soundfile")


class ForkServer:
    """One server process; :meth:`run` forks it into a ``transfuse`` call."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     bufsize=0)
        self._pending = b""  # read from the pipe's descriptor itself: a buffered reader would hide lines from select
        if self._line(120) != "ready":
            raise RuntimeError("the fork server did not start")

    def _line(self, timeout: float | None) -> str | None:
        """The server's next line, or None when none came within ``timeout`` seconds."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._pending:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError("the fork server stopped")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode().strip()

    def run(self, args: list[str], exe: str, cwd: Path | None, env: dict, timeout: float):
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "out", Path(tmp) / "err"
            request = {"argv": [exe, *args], "cwd": str(cwd or os.getcwd()), "env": env, "out": str(out),
                       "err": str(err)}
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            pid = int(self._line(None))
            code = self._line(timeout)
            if code is None:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:  # not yet its own group, or just gone
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self._line(None)
                raise subprocess.TimeoutExpired([exe, *args], timeout)
            return subprocess.CompletedProcess([exe, *args], int(code), out.read_text(errors="replace"),
                                               err.read_text(errors="replace"))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _child(request: dict) -> None:
    """In the forked process: become the requested ``transfuse`` call, then exit with its code."""
    os.setpgid(0, 0)
    try:  # killed with the server (the server kills it on Ctrl-C; this covers the server being killed)
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
        sys.path[1:1] = extra
        import importlib

        importlib.invalidate_caches()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, request["out"]), (2, request["err"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
        sys.argv = request["argv"]
        try:
            from transfuse.cli import main

            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
        import atexit
        import threading

        # what a normal interpreter exit runs, in its order: threads' exit hooks (joblib's worker pool
        # shuts down here) and non-daemon threads joined, then the atexit functions
        threading._shutdown()
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001  (a crash is the call's result: exit code 1 with its traceback)
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def serve() -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    current = {"pid": None}

    def stop(signum, frame):  # Ctrl-C or a kill of the test run: the call running goes too
        if current["pid"]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(current["pid"], signal.SIGKILL)
        os._exit(128 + signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _child(request)
        current["pid"] = pid
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        current["pid"] = None
        print(os.waitstatus_to_exitcode(status), flush=True)


if __name__ == "__main__":
    serve()
