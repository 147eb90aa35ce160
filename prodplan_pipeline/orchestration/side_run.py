"""A run executed in a child process forked early and started later: `prodplan ingest` runs its
quality reports (WARN checks that gate no analytics) beside the analytics refresh this way.

Why a child, why a fork, and why early:
- Two Dagster runs cannot share a process: the compute-log capture redirects the process's
  stdout and stderr file descriptors for each step.
- A fresh interpreter would import Dagster again (~1 s of CPU on a machine whose two cores the
  refresh keeps busy); a fork has it already.
- Forked before the parent opens Dagster's storage or starts a thread, the child shares nothing
  a fork breaks: no lock held by another thread, no engine's pooled sockets; the warehouse's
  idle connections are kept per pid (``IDLE_CONNECTIONS``), so it neither reuses nor closes its
  parent's.

The child first runs its ``prepare`` (imports the run will need: Great Expectations costs ~2 s
of CPU, better spent while the parent reads the workbook than beside the analytics), then waits
on a pipe: the parent sends it one request, or cancels it and the child ends at once. It dies
with its parent (``PR_SET_PDEATHSIG``): a killed `prodplan ingest` leaves no run behind it that
outlives the ingestion lock it held.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import threading
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class SideRun:
    """The parent's handle on a forked child that runs ``execute(request) -> dict`` once."""

    def __init__(self, pid: int, requests: int, answers: int):
        self.pid = pid
        self._requests: int | None = requests
        self._answers = answers

    @classmethod
    def fork(cls, execute: Callable[[dict], dict], prepare: Callable[[], None] | None = None) -> SideRun | None:
        """Fork the child now; None where forking is not safe (another thread runs: its locks
        would be copied held) or not possible (no fork, or the system refused one). The child
        calls ``prepare()`` at once, before it waits for its request."""
        if not hasattr(os, "fork") or threading.active_count() > 1:
            return None
        requests_r, requests_w = os.pipe()
        answers_r, answers_w = os.pipe()
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError:  # no memory or process slot for a child: one run does everything
            for fd in (requests_r, requests_w, answers_r, answers_w):
                os.close(fd)
            return None
        if pid == 0:  # the child: never returns
            os.close(requests_w)
            os.close(answers_r)
            _serve_once(parent, requests_r, answers_w, execute, prepare)
        os.close(requests_r)
        os.close(answers_w)
        return cls(pid, requests_w, answers_r)

    def start(self, request: dict) -> None:
        """Send the child its request: it starts at once."""
        with os.fdopen(self._requests, "w", encoding="utf-8") as pipe:
            pipe.write(json.dumps(request))
        self._requests = None

    def answer(self) -> dict:
        """Wait for the child's answer (``{"error": ...}`` when it failed or died)."""
        with os.fdopen(self._answers, encoding="utf-8") as pipe:
            text = pipe.read()
        _, status = os.waitpid(self.pid, 0)
        if text:
            return json.loads(text)
        how = (
            f"was killed by signal {os.WTERMSIG(status)}"
            if os.WIFSIGNALED(status)
            else f"exited with status {os.waitstatus_to_exitcode(status)}"
        )
        return {"error": f"the quality run's process {how} before it answered"}

    def cancel(self) -> None:
        """Unsent: the child is killed, wherever its ``prepare`` is (it has only imported, so a
        failed command does not wait for that). Sent: wait for the child to end its run."""
        if self._requests is not None:
            os.close(self._requests)
            self._requests = None
            os.kill(self.pid, signal.SIGKILL)
        os.close(self._answers)
        os.waitpid(self.pid, 0)


def _serve_once(
    parent: int, requests: int, answers: int, execute: Callable[[dict], dict], prepare: Callable[[], None] | None
) -> None:
    code = 1
    try:
        _die_with(parent)
        if prepare is not None:
            with contextlib.suppress(Exception):  # the run needs the same and reports what fails
                prepare()
        with os.fdopen(requests, encoding="utf-8") as pipe:
            text = pipe.read()
        if not text:  # cancelled
            os._exit(0)
        answer = execute(json.loads(text))
        code = 0
    except BaseException as error:  # noqa: BLE001 - the parent reads what went wrong
        answer = {"error": f"{type(error).__name__}: {error}"}
    try:
        with os.fdopen(answers, "w", encoding="utf-8") as pipe:
            pipe.write(json.dumps(answer, default=str))
    finally:
        # Not sys.exit: the parent's atexit handlers (its idle connections, an embedded server)
        # are the parent's.
        os._exit(code)


def _die_with(parent: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's process group is killed with it
        pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
