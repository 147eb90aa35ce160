"""A database lost mid-run, or unreachable: one paragraph naming the server and what to do, no
traceback, and Dagster's storage retries bounded to a few seconds.

Every error here is real: sessions are ended with ``pg_terminate_backend`` from a second
connection, servers are unreachable because nothing listens on the port, and the embedded server
is stopped the way a crash stops it (``pg_ctl -m immediate``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from prodplan_pipeline.settings import Settings
from prodplan_pipeline.warehouse.connection import libpq_dsn
from prodplan_pipeline.warehouse.embedded import (
    _is_root,
    _pgserver,
    embedded_server_uri,
    running_server_pid,
    stop_embedded_server,
)
from prodplan_pipeline.warehouse.lost import database_lost_message
from prodplan_pipeline.workbook.sample import write_sample
from prodplan_pipeline_tests.api_server import free_port
from prodplan_pipeline_tests.conftest import REPO_ROOT, run_cli

BOUND = 60  # seconds: generous, the point is "not minutes"; the measured figure is printed
# A statement of the snapshot's merge writing a core table. Not the ANALYZE that runs after the
# commit in the background (losing that one is rightly only a warning: the run has succeeded),
# and not a migration's DDL at the start: a migration's connection is closed once it is done, so
# a termination that arrives just after its statement ended killed nothing the ingest used (it
# then succeeded, once in CI). The merge's connection is used until its commit.
CORE_QUERY = """
    SELECT pid FROM pg_stat_activity
    WHERE datname = %s AND state = 'active' AND backend_type = 'client backend'
      AND query ~* '^\\s*(INSERT INTO|UPDATE|DELETE FROM)\\s+core\\.' AND pid <> pg_backend_pid()"""


@pytest.fixture
def db(databases):
    url = databases.create("lost")
    return url, Settings(home=Path("/nonexistent"), database_url=url.render_as_string(hide_password=False))


def connect(url):
    return psycopg2.connect(libpq_dsn(url))


def terminate(url, pid: int) -> None:
    """End backend ``pid`` from a second connection, and wait until it is gone."""
    admin = connect(url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
            for _ in range(100):
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
                if cur.fetchone()[0] == 0:
                    return
                time.sleep(0.05)
    finally:
        admin.close()


def raised(action) -> BaseException:
    try:
        action()
    except BaseException as error:  # noqa: BLE001 - the error is the result
        return error
    raise AssertionError("expected an error")


def assert_lost_paragraph(message: str | None, server: str) -> None:
    assert message is not None
    assert "\n" not in message, "one paragraph"
    assert server in message
    assert "was lost: the server restarted, crashed or terminated the session" in message
    assert "an uncommitted transaction is rolled back by PostgreSQL" in message
    assert "re-run the same command" in message


# --- (a) real exceptions from really terminated sessions -----------------------------------------


def test_a_terminated_idle_session_is_recognised_then_its_closed_connection(db):
    url, settings = db
    conn = connect(url)
    terminate(url, conn.get_backend_pid())
    lost = raised(lambda: conn.cursor().execute("SELECT 1"))
    assert isinstance(lost, psycopg2.OperationalError)
    message = database_lost_message(lost, settings)
    print(message)
    assert_lost_paragraph(message, url.render_as_string(hide_password=True))
    closed = raised(conn.cursor)  # what the next use of that connection gets
    assert isinstance(closed, psycopg2.InterfaceError) and "already closed" in str(closed)
    assert_lost_paragraph(database_lost_message(closed, settings), url.database)


def test_a_session_terminated_in_the_middle_of_a_query_is_recognised(db):
    url, settings = db
    conn = connect(url)
    pid, errors = conn.get_backend_pid(), []
    worker = threading.Thread(
        target=lambda: errors.append(raised(lambda: conn.cursor().execute("SELECT pg_sleep(30)")))
    )
    worker.start()
    _wait_for_active(url, pid)
    terminate(url, pid)
    worker.join(10)
    assert isinstance(errors[0], psycopg2.OperationalError)
    print(type(errors[0]).__name__, str(errors[0]).splitlines()[0])
    assert_lost_paragraph(database_lost_message(errors[0], settings), url.database)


def _wait_for_active(url, pid: int) -> None:
    admin = connect(url)
    admin.autocommit = True  # pg_stat_activity is one snapshot per transaction: a fresh one per look
    try:
        with admin.cursor() as cur:
            for _ in range(100):
                cur.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
                if cur.fetchone() == ("active",):
                    return
                time.sleep(0.05)
    finally:
        admin.close()
    raise AssertionError(f"backend {pid} never became active")


def test_a_rollback_on_the_lost_connection_and_its_serialized_form_are_recognised(db):
    """Code that rolls back on error (``with conn:``) raises "connection already closed" while
    handling the real loss; a Dagster step failure keeps that chain as class names and messages."""
    from dagster._utils.error import serializable_error_info_from_exc_info

    url, settings = db
    conn = connect(url)
    terminate(url, conn.get_backend_pid())
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    except psycopg2.InterfaceError as error:
        assert isinstance(error.__context__, psycopg2.OperationalError)
        info = serializable_error_info_from_exc_info(sys.exc_info())
    message = database_lost_message(info, settings)
    print(message)
    assert_lost_paragraph(message, url.database)
    assert "server closed the connection unexpectedly" in message, "the original event, not its echo"


def test_a_sqlalchemy_wrapped_loss_is_recognised(db):
    url, settings = db
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            terminate(url, conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())
            error = raised(lambda: conn.exec_driver_sql("SELECT 1"))
    finally:
        engine.dispose()
    assert isinstance(error, sa.exc.OperationalError)
    message = database_lost_message(error, settings)
    assert_lost_paragraph(message, url.database)
    assert "(psycopg2" not in message and "sqlalche.me" not in message, "the server's words only"


def test_a_server_nobody_listens_on_is_recognised_and_the_password_hidden():
    port = free_port()
    url = f"postgresql://postgres:s3cret@127.0.0.1:{port}/prodplan"
    error = raised(lambda: psycopg2.connect(url))
    message = database_lost_message(error, Settings(home=Path("/nonexistent"), database_url=url))
    print(message)
    assert message is not None and "\n" not in message
    shown = f"postgresql+psycopg2://postgres:***@127.0.0.1:{port}/prodplan"
    assert f"cannot connect to PostgreSQL at {shown}" in message
    assert "s3cret" not in message
    assert "re-run the same command" in message


def _statement_error(url, statement: str) -> BaseException:
    conn = connect(url)
    try:
        return raised(lambda: conn.cursor().execute(statement))
    finally:
        conn.close()


@pytest.mark.parametrize(
    "make",
    [
        lambda url: _statement_error(url, "SELECT 1 / 0"),
        lambda url: _statement_error(url, "SELECT * FROM no_such_table"),
        # QueryCanceled is an OperationalError too
        lambda url: _statement_error(url, "SET statement_timeout = 50; SELECT pg_sleep(2)"),
        lambda url: raised(lambda: connect(url.set(database="prodplan_no_such_database"))),
        lambda url: ValueError("connection refused"),  # the words alone do not make a lost database
        lambda url: KeyError("server closed the connection unexpectedly"),
    ],
    ids=["division-by-zero", "undefined-table", "statement-timeout", "no-such-database", "value-error", "key-error"],
)
def test_unrelated_errors_are_not_recognised(db, make):
    from dagster._utils.error import serializable_error_info_from_exc_info

    url, settings = db
    error = make(url)
    assert database_lost_message(error, settings) is None, repr(error)
    try:
        raise error
    except BaseException:  # noqa: BLE001 - serialized as a Dagster step failure would be
        info = serializable_error_info_from_exc_info(sys.exc_info())
    assert database_lost_message(info, settings) is None, info.message


# --- Dagster's storage retries ---------------------------------------------------------------------


def test_storage_retries_are_bounded_once_per_outage(databases):
    """dagster-postgres alone retries each connection for ~12 s; bounded, the first connection to
    a dead server gives up after the budget and the next ones at their first attempt."""
    from dagster_postgres.utils import DagsterPostgresException

    from prodplan_pipeline.orchestration.instance import _OutageRetries

    retry = _OutageRetries(1.0)
    dead = sa.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/x", poolclass=sa.pool.NullPool)
    started = time.monotonic()
    first = raised(lambda: retry(dead.connect))
    first_seconds, started = time.monotonic() - started, time.monotonic()
    second = raised(lambda: retry(dead.connect))
    second_seconds = time.monotonic() - started
    print(f"first connection gave up after {first_seconds:.2f} s, the next after {second_seconds:.2f} s")
    assert isinstance(first, DagsterPostgresException) and isinstance(second, DagsterPostgresException)
    assert 0.3 < first_seconds < 5 and second_seconds < first_seconds
    assert "cannot connect to PostgreSQL" in database_lost_message(first, server="the test server")
    alive = sa.create_engine(databases.server, poolclass=sa.pool.NullPool)
    retry(alive.connect).close()  # the server answers: the outage is over
    assert retry.failing_since is None
    alive.dispose()
    dead.dispose()


def test_loading_the_code_location_bounds_the_storage_retries():
    code = (
        "import prodplan_pipeline.orchestration.definitions, dagster_postgres.utils as u; "
        "from dagster_postgres.event_log import event_log as e; "
        "r = u.retry_pg_connection_fn; print(type(r).__name__, r.seconds, e.retry_pg_connection_fn is r)"
    )
    env = {**os.environ, "PRODPLAN_DB_RETRY_SECONDS": "2.5"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )
    assert result.stdout.split() == ["_OutageRetries", "2.5", "True"], result.stderr


# --- (b) end to end: a server that is not there ---------------------------------------------------


@pytest.fixture(scope="module")
def workbook(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lost") / "Folha_IA.xlsx"
    write_sample(path, scale=0.3, seed=7)  # big enough for a merge that lasts a moment
    return path


@pytest.mark.parametrize("command", ["status", "ingest"])
def test_an_unreachable_server_ends_the_command_with_one_paragraph(clean_env, workbook, command):
    port = free_port()
    env = {**clean_env, "PRODPLAN_DATABASE_URL": f"postgresql://postgres:s3cret@127.0.0.1:{port}/prodplan"}
    args = [command] + (["--workbook", str(workbook)] if command == "ingest" else [])
    started = time.monotonic()
    result = run_cli(args, env, timeout=BOUND + 60)
    seconds = time.monotonic() - started
    print(f"prodplan {command} against 127.0.0.1:{port}: exit {result.returncode} in {seconds:.1f} s")
    print(result.stderr)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    paragraph = result.stderr.strip()
    assert "\n" not in paragraph
    assert paragraph.startswith(f"prodplan {command}: cannot connect to PostgreSQL at ")
    # ingest names the Dagster database: the first one it connects to, on the same server
    assert f"postgres:***@127.0.0.1:{port}/" in paragraph and "s3cret" not in paragraph
    assert "Check that the server is up" in paragraph
    assert seconds < BOUND


# --- (c) end to end: the database lost in the middle of `prodplan ingest` ----------------------------


def _ingest_and_end_the_merge(env: dict[str, str], workbook: Path, dsn: str, database: str, end):
    """Start `prodplan ingest`, wait for an active core statement, ``end(pid)``; (result, seconds
    from the loss to the exit)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "prodplan_pipeline.cli", "ingest", "--workbook", str(workbook)],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    try:
        pid = _poll_core_statement(admin, database, process)
    finally:
        admin.close()
    lost_at = time.monotonic()
    end(pid)
    try:
        stdout, stderr = process.communicate(timeout=BOUND + 120)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    seconds = time.monotonic() - lost_at
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), seconds


def _poll_core_statement(admin, database: str, process) -> int:
    while process.poll() is None:
        with admin.cursor() as cur:
            cur.execute(CORE_QUERY, (database,))
            row = cur.fetchone()
        if row:
            return row[0]
        time.sleep(0.02)
    raise AssertionError(f"the ingestion ended before a core statement was seen:\n{process.stderr.read()}")


def test_a_backend_terminated_mid_ingest_ends_without_a_traceback(cli_env, databases, workbook):
    """Only the session dies; the server stays up. Where the loss surfaces decides who words it
    (a failed step: the launcher; an exception out of the run: `main`, with this module's
    paragraph); either way: a failing exit, a last line from prodplan, no traceback."""
    url = make_url(cli_env["PRODPLAN_DATABASE_URL"])
    result, seconds = _ingest_and_end_the_merge(
        cli_env,
        workbook,
        libpq_dsn(databases.server.set(database="postgres")),
        url.database,
        lambda pid: terminate(databases.server.set(database="postgres"), pid),
    )
    last = result.stderr.strip().splitlines()[-1]
    print(f"exit {result.returncode}, {seconds:.1f} s after the termination; last line:\n{last}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert last.startswith("prodplan ingest: ")


def test_the_embedded_server_stopped_mid_ingest_gives_one_paragraph_and_comes_back(clean_env, workbook):
    """The user's report: PostgreSQL killed during the merge gave 40 s of retries, then a 238-line
    traceback. Now: a few seconds, one paragraph, and the next command restarts the server."""
    pgdata = Path(clean_env["PRODPLAN_HOME"]) / "pgdata"
    try:
        assert run_cli(["status"], clean_env).returncode == 0  # starts the embedded server
        dsn = embedded_server_uri(pgdata)  # the running server, reused
        result, seconds = _ingest_and_end_the_merge(clean_env, workbook, dsn, "prodplan", lambda pid: _crash(pgdata))
        paragraph = result.stderr.strip().splitlines()[-1]
        print(f"exit {result.returncode}, {seconds:.1f} s after the crash\n{result.stderr}")
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        # lost (a session of the run saw the crash) or refused (only reconnections did)
        assert paragraph.startswith(
            ("prodplan ingest: the connection to PostgreSQL at ", "prodplan ingest: cannot connect to PostgreSQL at ")
        )
        assert f"the embedded server under {pgdata}" in paragraph
        assert "the next `prodplan` command restarts the embedded server" in paragraph
        assert seconds < BOUND
        after = run_cli(["status", "--json"], clean_env)
        assert after.returncode == 0, after.stderr
        assert running_server_pid(pgdata) is not None
    finally:
        stop_embedded_server(pgdata)


def _crash(pgdata: Path) -> None:
    """Stop the server the way a crash does: every backend killed, no checkpoint."""
    _pgserver().pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=pgdata, user="pgserver" if _is_root() else None)
