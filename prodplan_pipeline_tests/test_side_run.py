"""The forked side run that `prodplan ingest` uses for its quality reports (orchestration/
side_run.py): cancelled, it runs nothing (and is not waited for while it prepares); started,
it answers from the process that prepared; failed, it says why; its parent
killed alone, it dies too; and a killed, unreaped process counts as dead for closing runs.

Each case runs in a fresh interpreter: the test process has threads (pytest-xdist's), and
``SideRun.fork`` refuses to fork a process with threads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from prodplan_pipeline.orchestration.interrupted import _alive

SCRIPT = """
import json, os, sys, time
from pathlib import Path
from prodplan_pipeline.orchestration.side_run import SideRun

mark = Path(sys.argv[2])
case = sys.argv[1]

def prepare():
    (mark.parent / "prepared").write_text(str(os.getpid()))
    if case == "cancel-while-preparing":
        time.sleep(600)

def execute(request):
    mark.write_text(str(os.getpid()))
    if request.get("fail"):
        raise ValueError("the request asked to fail")
    if request.get("forever"):
        while True:
            time.sleep(1)
    return {"doubled": request["n"] * 2, "pid": os.getpid()}

side = SideRun.fork(execute, prepare)
if case == "cancel":
    side.cancel()
    print(json.dumps({"ran": mark.exists()}))
elif case == "cancel-while-preparing":
    while not (mark.parent / "prepared").exists():
        time.sleep(0.01)
    side.cancel()  # returns although prepare() would sleep for 600 s
    print(json.dumps({"ran": mark.exists()}))
elif case == "answer":
    side.start({"n": 21})
    print(json.dumps(side.answer()))
elif case == "fail":
    side.start({"fail": True})
    print(json.dumps(side.answer()))
elif case == "orphan":
    side.start({"forever": True})
    print(json.dumps({"parent": os.getpid()}), flush=True)
    time.sleep(600)
"""


def run_case(case: str, tmp_path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, case, str(tmp_path / "ran")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_cancelled_side_run_runs_nothing(tmp_path):
    assert run_case("cancel", tmp_path) == {"ran": False}


def test_a_side_run_cancelled_while_it_prepares_is_not_waited_for(tmp_path):
    assert run_case("cancel-while-preparing", tmp_path) == {"ran": False}


def test_a_started_side_run_answers_from_its_own_process(tmp_path):
    answer = run_case("answer", tmp_path)
    assert answer["doubled"] == 42
    assert answer["pid"] == int((tmp_path / "ran").read_text())
    assert answer["pid"] == int((tmp_path / "prepared").read_text()), "prepared in the process that ran"


def test_a_failed_side_run_says_why(tmp_path):
    assert run_case("fail", tmp_path) == {"error": "ValueError: the request asked to fail"}


def test_a_side_run_dies_with_its_parent_killed_alone(tmp_path):
    parent = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "orphan", str(tmp_path / "ran")],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        json.loads(parent.stdout.readline())
        mark = tmp_path / "ran"
        deadline = time.monotonic() + 60
        while not mark.exists() and time.monotonic() < deadline:  # the child is running its request
            time.sleep(0.01)
        child = int(mark.read_text())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)  # the parent alone, not its group
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _alive(child), "the side run outlived its parent"
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
        parent.stdout.close()


def test_a_killed_process_not_yet_reaped_is_not_alive():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        assert _alive(process.pid)
        process.kill()
        deadline = time.monotonic() + 30
        while _alive(process.pid) and time.monotonic() < deadline:  # a zombie until waited for
            time.sleep(0.01)
        assert not _alive(process.pid)
        assert os.waitpid(process.pid, os.WNOHANG)[0] == process.pid, "it was a zombie, not gone"
    finally:
        process.kill()
        process.wait()
