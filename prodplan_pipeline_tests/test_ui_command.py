"""`prodplan ui` and `prodplan demo` as a user runs them: real subprocesses on the real test server.

A busy or impossible port is refused in one line before any Dagster process starts; a running UI
stops together with every process it started, whichever signal stops it (and when dagster dev
dies by itself, prodplan ui ends with its status and stops what it left); the demo ends with the
commands to try next.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from prodplan_pipeline.cli import UI_STOP_GRACE

from .api_server import free_port
from .conftest import REPO_ROOT, run_cli, run_cli_forked

STARTUP_TIMEOUT = 120  # seconds for dagster dev to load the code location (~20-30 s here)
# prodplan ui kills what is still running UI_STOP_GRACE s after the signal, then gives leftovers
# 10 + 5 s: it must be gone by then, and a margin.
STOP_TIMEOUT = UI_STOP_GRACE + 15 + 30


def start_ui(env: dict[str, str], port: int, **output) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "prodplan_pipeline.cli", "ui", "--port", str(port)], env=env, cwd=REPO_ROOT, **output
    )


def running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running; a zombie has stopped (this machine's init never reaps orphans)."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def processes_with_home(home: str) -> list[psutil.Process]:
    """Running processes started with PRODPLAN_HOME=home: anything a command of this test left."""
    found = []
    for process in psutil.process_iter():
        try:
            if (
                process.pid != os.getpid()
                and process.status() != psutil.STATUS_ZOMBIE
                and process.environ().get("PRODPLAN_HOME") == home
            ):
                found.append(process)
        except psutil.Error:
            continue
    return found


# --- refusals, before anything starts ----------------------------------------------------------


def test_ui_refuses_a_busy_port_in_one_line_and_starts_nothing(cli_env):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ui = start_ui(cli_env, port, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = set()  # every descendant of prodplan ui, sampled until it exits
        while ui.poll() is None:
            try:
                seen |= {child.pid for child in psutil.Process(ui.pid).children(recursive=True)}
            except psutil.NoSuchProcess:
                break
            time.sleep(0.01)
        stdout, stderr = ui.communicate(timeout=60)
    assert ui.returncode == 1, stderr
    assert stderr.splitlines() == [stderr.strip()] and f"cannot listen on 127.0.0.1:{port}" in stderr
    assert "--port" in stderr and stdout == ""
    assert seen == set(), "no process was started"
    assert processes_with_home(cli_env["PRODPLAN_HOME"]) == []
    assert not (Path(cli_env["PRODPLAN_HOME"]) / "dagster").exists(), "not even Dagster's home"


@pytest.mark.parametrize("port", ["0", "70000"])
def test_ui_refuses_a_port_out_of_range_in_one_line(cli_env, port):
    result = run_cli(["ui", "--port", port], cli_env, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"prodplan ui: --port must be between 1 and 65535, got {port}"]


# --- stopping: nothing left behind ---------------------------------------------------------------


@pytest.mark.parametrize(
    "target, sent, exit_code",
    [
        ("prodplan ui", signal.SIGTERM, 128 + signal.SIGTERM),
        ("prodplan ui", signal.SIGINT, 128 + signal.SIGINT),
        # dagster dev dying by itself: prodplan ui ends with its status, and stops the orphans
        ("dagster dev", signal.SIGKILL, 128 + signal.SIGKILL),
    ],
    ids=["sigterm", "sigint", "dagster-dev-killed"],
)
def test_ui_stops_with_every_process_it_started(cli_env, tmp_path, target, sent, exit_code):
    port = free_port()
    log = tmp_path / "ui.log"
    cli_run = failed_cli_run(cli_env, tmp_path) if sent == signal.SIGTERM else None
    with log.open("w") as out:
        ui = start_ui(cli_env, port, stdout=out, stderr=subprocess.STDOUT)
    started: list[psutil.Process] = []
    try:
        wait_until_serving(ui, port, log)
        if cli_run is not None:  # prodplan ui serves the CLI's Dagster storage: its runs are there
            assert ui_runs(port).get(cli_run) == "FAILURE"
        started = psutil.Process(ui.pid).children(recursive=True)
        commands = [" ".join(p.cmdline()) for p in started]
        assert any("dagster_webserver" in c for c in commands), commands
        assert any("dagster._daemon" in c for c in commands), commands
        dagster_dev = next(p for p in started if p.ppid() == ui.pid)
        os.kill(ui.pid if target == "prodplan ui" else dagster_dev.pid, sent)
        assert ui.wait(timeout=STOP_TIMEOUT) == exit_code, log.read_text()[-3000:]
        deadline = time.monotonic() + 10  # it waited for them: nothing should be left at all
        while running(started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert running(started) == [], [" ".join(p.cmdline()) for p in running(started)]
        assert processes_with_home(cli_env["PRODPLAN_HOME"]) == []
        with socket.socket() as again:  # the port is free again
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(("127.0.0.1", port))
    finally:  # whatever this test started must not outlive it, even when it fails
        for process in running(started) + processes_with_home(cli_env["PRODPLAN_HOME"]):
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        ui.wait(timeout=30)


def failed_cli_run(env: dict[str, str], folder: Path) -> str:
    """The Dagster run id of a `prodplan ingest` that failed (a workbook without the export's
    sheets: its run is recorded, cheaply, with a status only the CLI's run could have)."""
    import openpyxl

    broken = folder / "no_export_sheets.xlsx"
    book = openpyxl.Workbook()
    book.active.title = "Outra"
    book.save(broken)
    result = run_cli_forked(["ingest", "--workbook", str(broken), "--json"], env)  # the run, not the process
    assert result.returncode == 1 and "the sheet 'Fases' is missing" in result.stderr, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])["dagster_run_id"]


def ui_runs(port: int) -> dict[str, str]:
    """Every run the UI's GraphQL lists: run id -> status."""
    query = {"query": "{ runsOrError { ... on Runs { results { runId status } } } }"}
    answer = httpx.post(f"http://127.0.0.1:{port}/graphql", json=query, timeout=30).json()
    return {r["runId"]: r["status"] for r in answer["data"]["runsOrError"]["results"]}


def wait_until_serving(ui: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        assert ui.poll() is None, f"prodplan ui exited ({ui.returncode}):\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the Dagster UI did not answer within {STARTUP_TIMEOUT} s:\n{log.read_text()[-3000:]}")


# --- the demo ------------------------------------------------------------------------------------


def test_demo_ends_with_the_commands_to_try_next(cli_env):
    result = run_cli(["demo", "--scale", "0.01"], cli_env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    *_, heading, ui, serve, status = result.stdout.rstrip().splitlines()
    assert heading == "next:"
    assert "prodplan ui " in ui and "Dagster UI" in ui and "checks" in ui
    assert "prodplan serve " in serve and "read API" in serve and "/docs" in serve
    assert "prodplan status " in status and "ingestion runs" in status
