"""`prodplan` commands as processes forked from a server that imported their libraries once.

A `prodplan ingest` subprocess spends ~4.5 s of CPU importing Dagster, Great Expectations,
pandas and SQLAlchemy before its first line, against ~2.5 s running a test's small workbook
(the suite starts about a hundred of them). The fork server, one per test process, imports those
third-party libraries once and forks a child per command. The child is a process of its own: its
own pid and session (``os.killpg(pid, ...)`` stops it and what it started), environment, working
directory, stdin, stdout, stderr and exit status; it imports ``prodplan_pipeline`` itself (whose
modules read the environment at import, so the server never imports them) and runs the module
as ``python -m prodplan_pipeline.cli`` does. Only the interpreter's start and the libraries'
imports are shared. ``run_cli`` (a fresh interpreter) keeps at least one test per command and
per exit code.

Pitfalls, each met here: the server must hold no thread, lock or connection when it forks
(imports start none; OPENBLAS_NUM_THREADS=1 keeps numpy's BLAS from starting its pool); a
child must leave through ``os._exit`` (never the server's ``atexit`` or buffered output); the
server replies with the pid only once the child has its session, files and environment, as
``Popen`` returns; ``/proc/PID/environ`` (psutil's ``environ()``) shows the server's start-up
environment, not the command's (what the command and its children see is the command's: use
``run_cli`` where a test finds processes by their environment); and the server stops when its
test process does (it watches its parent).
"""

from __future__ import annotations

import json
import os
import runpy
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

# What a `prodplan` command imports that is not prodplan's: imported once, here.
PRELOADED = (
    "dagster",
    "dagster_postgres",
    "dagster._core.execution.api",
    "dagster._core.storage.event_log",
    "great_expectations",
    "great_expectations.expectations",
    "pandas",
    "pyarrow",
    "sqlalchemy",
    "psycopg2",
    "openpyxl",
    "alembic",
    "httpx",
)
REQUEST_BYTES = 1 << 20
POLL_SECONDS = 0.02  # how late an exit status may be reported


class ForkServer:
    """The server process, started on first use (``start``), listening on a Unix socket."""

    def __init__(self, cwd: Path, environment):
        self.cwd = cwd
        self.environment = environment  # () -> the server's environment, read when it starts
        self.process: subprocess.Popen | None = None
        self.address: str | None = None

    def start(self) -> str:
        if self.process is None or self.process.poll() is not None:
            folder = tempfile.mkdtemp(prefix="prodplan-forks-")
            self.address = os.path.join(folder, "socket")
            env = {**self.environment(), "OPENBLAS_NUM_THREADS": "1"}
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, self.address], cwd=self.cwd, env=env, stdin=subprocess.DEVNULL
            )
            deadline = time.monotonic() + 120
            while not os.path.exists(self.address):  # bound after its imports
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the fork server did not start ({self.process.poll()})")
                time.sleep(0.05)
        return self.address

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


class ForkedProcess:
    """One forked command, with the part of ``subprocess.Popen``'s interface the tests use."""

    def __init__(
        self, server: ForkServer, args: list[str], env: dict[str, str], cwd: Path, stdin: int, stdout: int, stderr: int
    ):
        self.args = args
        self.returncode: int | None = None
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._socket.connect(server.start())
        request = json.dumps({"args": args, "env": env, "cwd": str(cwd)}).encode()
        socket.send_fds(self._socket, [request], [stdin, stdout, stderr])
        self.pid = json.loads(self._socket.recv(REQUEST_BYTES))["pid"]

    def poll(self) -> int | None:
        if self.returncode is None:
            ready, _, _ = select.select([self._socket], [], [], 0)
            if ready:
                self._receive_status()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            ready, _, _ = select.select([self._socket], [], [], timeout)
            if not ready:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._receive_status()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # (once reaped, its pid may be another process's)
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _receive_status(self) -> None:
        message = self._socket.recv(REQUEST_BYTES)
        self._socket.close()
        if not message:
            raise RuntimeError("the fork server stopped before the command ended")
        self.returncode = json.loads(message)["returncode"]


def run_forked(
    server: ForkServer, args: list[str], env: dict[str, str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess:
    """``subprocess.run(..., capture_output=True, text=True, timeout=...)`` for a forked command."""
    with open(os.devnull) as stdin, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = ForkedProcess(server, args, env, cwd, stdin.fileno(), out.fileno(), err.fileno())
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
            raise
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(["prodplan", *args], code, out.read().decode(), err.read().decode())


# --- the server ----------------------------------------------------------------------------------


def serve(address: str) -> None:
    import importlib

    for name in PRELOADED:
        importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(address + ".tmp")
    listener.listen(16)
    os.rename(address + ".tmp", address)  # the client waits for this name: bound and listening
    parent, waiting = os.getppid(), {}  # child pid -> its client's connection
    while os.getppid() == parent:
        ready, _, _ = select.select([listener], [], [], POLL_SECONDS)
        if ready:
            connection, _ = listener.accept()
            message, fds, _, _ = socket.recv_fds(connection, REQUEST_BYTES, 3)
            pid = _fork(json.loads(message), fds, [listener, connection, *waiting.values()])
            for fd in fds:
                os.close(fd)
            connection.send(json.dumps({"pid": pid}).encode())
            waiting[pid] = connection
        _report_exits(waiting)


def _report_exits(waiting: dict[int, socket.socket]) -> None:
    while waiting:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        connection = waiting.pop(pid, None)
        if connection is not None:
            try:
                connection.send(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode())
            except OSError:  # the client gave up on it
                pass
            connection.close()


def _fork(request: dict, fds: list[int], sockets: list[socket.socket]) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    ready, set_up = os.pipe()
    pid = os.fork()
    if pid:
        # As Popen(start_new_session=True) returns: the child has its session and files.
        os.close(set_up)
        os.read(ready, 1)  # a byte, or nothing if it died first
        os.close(ready)
        return pid
    code = 1
    try:
        os.close(ready)
        os.setsid()  # its own process group: killpg(pid) reaches what it starts
        for sock in sockets:
            sock.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as a new interpreter has them
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.write(set_up, b"1")
        os.close(set_up)
        sys.argv = [os.path.join(request["cwd"], "prodplan_pipeline", "cli.py"), *request["args"]]
        runpy.run_module("prodplan_pipeline.cli", run_name="__main__", alter_sys=True)
        code = 0  # the CLI leaves through os._exit; a module that returns has succeeded
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


if __name__ == "__main__":
    serve(sys.argv[1])
