"""The fork server's commands are the commands a fresh interpreter runs (forked_cli): the same
output and exit status, each in a process, session, environment and directory of its own."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from .conftest import REPO_ROOT, run_cli, run_cli_forked, start_cli_forked


@pytest.mark.parametrize(
    "args",
    [["--help"], ["ingest", "--workbook", "/nonexistent/Folha_IA.xlsx"], ["sample", "--scale", "lots"], ["env"]],
    ids=["help", "exit-1", "usage", "env"],
)
def test_a_forked_command_prints_and_exits_as_in_a_fresh_interpreter(args, cli_env):
    fresh, forked = run_cli(args, cli_env), run_cli_forked(args, cli_env)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert fresh.stdout or fresh.stderr, "the comparison compares something"


def test_each_forked_command_has_only_its_own_environment(cli_env, tmp_path):
    homes = [tmp_path / "one", tmp_path / "two"]
    outputs = [run_cli_forked(["env"], {**cli_env, "PRODPLAN_HOME": str(home)}).stdout for home in homes]
    for home, output, other in zip(homes, outputs, reversed(homes), strict=True):
        assert f"PRODPLAN_WORKBOOK={home}/workbooks/" in output and str(other) not in output


def test_a_forked_command_runs_in_its_own_session_and_dies_with_its_group(cli_env, tmp_path):
    env = cli_env
    with open(tmp_path / "out", "w") as out:  # a 1.1M-row workbook: seconds of work to interrupt
        process = start_cli_forked(
            ["sample", "--scale", "1", "--out", str(tmp_path / "big.xlsx")],
            env,
            stdout=out.fileno(),
            stderr=out.fileno(),
        )
    child = psutil.Process(process.pid)
    assert os.getpgid(process.pid) == process.pid and os.getsid(process.pid) == process.pid
    assert Path(child.cwd()) == REPO_ROOT
    assert child.ppid() != os.getpid(), "forked by the server, not by this test"
    time.sleep(0.2)
    assert process.poll() is None
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    assert not (tmp_path / "big.xlsx").exists()
