"""How `prodplan` ends on an error: one paragraph on stderr, exit status 1, never a traceback.

Bad input (a workbook path that loops, dangles, goes through a file, is too long or not permitted;
an --out that cannot be written; a bad option or PRODPLAN_* value; an unwritable PRODPLAN_HOME) says
what is wrong with what. Anything else is *unexpected*: the paragraph says so, names the exception
and the log file under $PRODPLAN_HOME/logs that holds its traceback.

Every command is a real subprocess. Commands that could reach a database get the real test server
(`cli_env`). An unexpected error is provoked for real by running the CLI's `main` in a subprocess
after replacing one internal function with one that raises; nothing in the CLI is stubbed.
Permission cases run the subprocess without root's permission bypass (CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH dropped with setpriv) when the tests run as root, so they hold for everyone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prodplan_pipeline.workbook.sample import write_sample
from prodplan_pipeline_tests.conftest import REPO_ROOT, run_cli

LONG_NAME = "a" * 300 + ".xlsx"  # every Linux file system allows 255 bytes per name


def _unprivileged() -> list[str]:
    """The command prefix that makes file permissions apply: none unless the tests run as root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "running as root: permission tests need setpriv (util-linux) to drop the bypass"
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


def run_unprivileged(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """``run_cli``, as a user whom file permissions apply to."""
    return subprocess.run(
        [*_unprivileged(), sys.executable, "-m", "prodplan_pipeline.cli", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_main_raising(error: str, env: dict[str, str], unprivileged: bool = False):
    """The CLI's ``main(["status"])`` in a subprocess where finding the warehouse raises ``error``
    (before any connection: the embedded server's socket is not for a user without privileges)."""
    code = (
        "import errno, sys\nfrom prodplan_pipeline.warehouse import Warehouse\n"
        f"def from_settings(cls, settings):\n    raise {error}\n"
        "Warehouse.from_settings = classmethod(from_settings)\n"
        "from prodplan_pipeline.cli import main\n"
        "sys.exit(main(['status']))\n"
    )
    prefix = _unprivileged() if unprivileged else []
    return subprocess.run(
        [*prefix, sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


def paragraph(result: subprocess.CompletedProcess, command: str) -> str:
    """The one-paragraph error, after checking exit status 1 and that no traceback was shown."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"prodplan {command}: "), result.stderr
    return last


def assert_user_error(result, command: str, home: Path, *fragments: str) -> str:
    message = paragraph(result, command)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert "unexpected" not in message, message
    assert not (home / "logs").exists(), "a user error wrote a log"
    return message


@pytest.fixture
def workbook(tmp_path) -> Path:
    path = tmp_path / "Folha_IA.xlsx"
    write_sample(path, scale=0.01, seed=7)
    return path


# --- the workbook path of `prodplan ingest` ------------------------------------------------------


def _loop(tmp: Path) -> Path:
    os.symlink("loop.xlsx", tmp / "loop.xlsx")
    return tmp / "loop.xlsx"


def _dangling(tmp: Path) -> Path:
    os.symlink("gone.xlsx", tmp / "dangling.xlsx")
    return tmp / "dangling.xlsx"


def _through_file(tmp: Path) -> Path:
    (tmp / "file.xlsx").write_bytes(b"PK\x03\x04")
    return tmp / "file.xlsx" / "x.xlsx"


def _missing_folder(tmp: Path) -> Path:
    return tmp / "no-such-folder" / "x.xlsx"


PATH_CASES = {
    "loop": (_loop, ["is a symbolic link loop"]),
    "dangling": (_dangling, ["is a symbolic link to", "gone.xlsx, which does not exist"]),
    "through_a_file": (_through_file, ["cannot exist", "file.xlsx is a file, not a folder"]),
    "missing_folder": (_missing_folder, ["does not exist: there is no folder"]),
    "too_long": (lambda tmp: tmp / LONG_NAME, ["is too long a path", "at most 255 bytes per name"]),
}


@pytest.mark.parametrize("case", PATH_CASES)
def test_ingest_bad_workbook_path(cli_env, tmp_path, case):
    make, fragments = PATH_CASES[case]
    path = make(tmp_path)
    result = run_cli(["ingest", "--workbook", str(path)], cli_env)
    message = assert_user_error(result, "ingest", Path(cli_env["PRODPLAN_HOME"]), str(path), *fragments)
    assert "give the path of the Folha_IA .xlsx export" in message


def test_ingest_loop_from_prodplan_workbook(cli_env, tmp_path):
    """The same loop named by PRODPLAN_WORKBOOK: Settings must not trip over it either."""
    path = _loop(tmp_path)
    result = run_cli(["ingest"], {**cli_env, "PRODPLAN_WORKBOOK": str(path)})
    assert_user_error(result, "ingest", Path(cli_env["PRODPLAN_HOME"]), str(path), "is a symbolic link loop")


def test_ingest_unreadable_workbook(cli_env, workbook):
    workbook.chmod(0)
    result = run_unprivileged(["ingest", "--workbook", str(workbook)], cli_env)
    assert_user_error(
        result, "ingest", Path(cli_env["PRODPLAN_HOME"]), str(workbook), "cannot be read: permission denied"
    )


def test_ingest_workbook_in_a_closed_folder(cli_env, tmp_path):
    folder = tmp_path / "closed"
    folder.mkdir()
    write_sample(folder / "Folha_IA.xlsx", scale=0.01, seed=7)
    folder.chmod(0)
    path = folder / "Folha_IA.xlsx"
    result = run_unprivileged(["ingest", "--workbook", str(path)], cli_env)
    assert_user_error(
        result, "ingest", Path(cli_env["PRODPLAN_HOME"]), str(path), f"permission denied on the folder {folder}"
    )


# --- the output path of `prodplan sample` ----------------------------------------------------------


def _folder(tmp: Path) -> Path:
    (tmp / "dir.xlsx").mkdir()
    return tmp / "dir.xlsx"


OUT_CASES = {**PATH_CASES, "a_folder": (_folder, ["is a folder, not a file"])}


@pytest.mark.parametrize("case", OUT_CASES)
def test_sample_bad_out_path(clean_env, tmp_path, case):
    make, fragments = OUT_CASES[case]
    path = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli(["sample", "--out", str(path), "--scale", "0.01"], clean_env)
    message = assert_user_error(result, "sample", Path(clean_env["PRODPLAN_HOME"]), str(path), *fragments)
    assert message.startswith("prodplan sample: cannot write the workbook: ")
    assert "choose another --out" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "something was written"


def test_sample_into_an_unwritable_folder(clean_env, tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    path = folder / "x.xlsx"
    result = run_unprivileged(["sample", "--out", str(path), "--scale", "0.01"], clean_env)
    assert_user_error(
        result,
        "sample",
        Path(clean_env["PRODPLAN_HOME"]),
        str(path),
        "cannot be written: permission denied",
        "choose another --out",
    )
    assert list(folder.iterdir()) == []


# --- deliberate user errors stay as they were -------------------------------------------------------


def test_bad_max_shrink_variable(cli_env):
    result = run_cli(["ingest"], {**cli_env, "PRODPLAN_MAX_SHRINK": "2"})
    assert_user_error(
        result,
        "ingest",
        Path(cli_env["PRODPLAN_HOME"]),
        "PRODPLAN_MAX_SHRINK must be a fraction between 0 and 1 (e.g. 0.35), got '2'",
    )


@pytest.mark.parametrize(
    "value, fragment",
    [("0", "a whole number of at least 1, got '0'"), ("2.5", "a whole number of at least 1, got '2.5'")],
)
def test_bad_alert_interval_variable(cli_env, value, fragment):
    result = run_cli(["ingest"], {**cli_env, "PRODPLAN_ALERT_INTERVAL_SECONDS": value})
    assert_user_error(
        result, "ingest", Path(cli_env["PRODPLAN_HOME"]), f"PRODPLAN_ALERT_INTERVAL_SECONDS must be {fragment}"
    )


def test_a_freshness_window_under_a_minute_is_refused(cli_env):
    # Dagster's freshness policies take no window under a minute: refused in one sentence here,
    # not as a definition error in the code server.
    result = run_cli(["ingest"], {**cli_env, "PRODPLAN_FRESHNESS_HOURS": "0.001"})
    assert_user_error(
        result,
        "ingest",
        Path(cli_env["PRODPLAN_HOME"]),
        "PRODPLAN_FRESHNESS_HOURS must be a number of hours, at least one minute (0.0167), got '0.001'",
    )


def test_bad_max_shrink_option(cli_env, workbook):
    result = run_cli(["ingest", "--workbook", str(workbook), "--max-shrink", "half"], cli_env)
    assert_user_error(
        result,
        "ingest",
        Path(cli_env["PRODPLAN_HOME"]),
        "--max-shrink must be a fraction between 0 and 1 (e.g. 0.35), got 'half'",
    )


@pytest.mark.parametrize(
    "option, value, fragment",
    [
        ("--scale", "0", "--scale must be greater than 0 and at most 20"),
        ("--scale", "nan", "--scale must be greater than 0"),
        ("--seed", "-1", "--seed must be zero or more, got -1"),
        ("--employee-link-match", "1.5", "--employee-link-match must be greater than 0 and at most 1"),
    ],
)
def test_bad_sample_options(clean_env, tmp_path, option, value, fragment):
    result = run_cli(["sample", "--out", str(tmp_path / "x.xlsx"), option, value], clean_env)
    assert_user_error(result, "sample", Path(clean_env["PRODPLAN_HOME"]), fragment)
    assert not (tmp_path / "x.xlsx").exists()


def test_unwritable_prodplan_home(cli_env, tmp_path, workbook):
    """An environment problem the user fixes: named in one paragraph, not reported as a bug."""
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o555)
    home = parent / "home"
    result = run_unprivileged(["ingest", "--workbook", str(workbook)], {**cli_env, "PRODPLAN_HOME": str(home)})
    assert_user_error(result, "ingest", home, f"{home} cannot be used: permission denied", f"PRODPLAN_HOME ({home})")


def test_prodplan_home_is_a_file(cli_env, tmp_path, workbook):
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    result = run_cli(["ingest", "--workbook", str(workbook)], {**cli_env, "PRODPLAN_HOME": str(home)})
    assert_user_error(result, "ingest", home, f"{home} is a file, not a folder", f"PRODPLAN_HOME ({home})")


# --- unexpected errors: a paragraph, and the traceback in a log ------------------------------------


def log_named_in(message: str) -> Path:
    found = re.search(r"traceback is in (\S+\.log);", message)
    assert found, message
    return Path(found.group(1))


@pytest.mark.parametrize(
    "error, shown",
    [
        ("KeyError('boom')", "KeyError: 'boom'"),
        ("ValueError('boom')", "ValueError: boom"),  # a bare ValueError is not a user error any more
        ("OSError(errno.EIO, 'Input/output error')", "OSError: [Errno 5] Input/output error"),
    ],
)
def test_unexpected_error_is_logged(cli_env, error, shown):
    result = run_main_raising(error, cli_env)
    message = paragraph(result, "status")
    assert "unexpected" in message and "a bug in ProdPlan or a problem with its environment" in message
    assert shown in message
    log = log_named_in(message)
    home = Path(cli_env["PRODPLAN_HOME"])
    assert log.parent == home / "logs" and re.fullmatch(r"prodplan-status-\d{8}-\d{6}-\d+\.log", log.name)
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "cmd_status" in text
    assert text.rstrip().endswith(shown), text


def test_unexpected_error_with_unwritable_home_logs_to_temp(cli_env, tmp_path):
    """No writable PRODPLAN_HOME: the log goes to the temporary folder rather than nowhere."""
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o555)
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**cli_env, "PRODPLAN_HOME": str(parent / "home"), "TMPDIR": str(temp)}
    result = run_main_raising("KeyError('boom')", env, unprivileged=True)
    message = paragraph(result, "status")
    log = log_named_in(message)
    assert log.parent == temp / "prodplan-logs" and "KeyError: 'boom'" in log.read_text()
