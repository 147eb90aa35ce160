"""Where the warehouse lives: a PostgreSQL URL, or the embedded server, and nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import psycopg2.errors
import pytest

from prodplan_pipeline.settings import Settings
from prodplan_pipeline.warehouse.connection import DatabaseConfigError, libpq_dsn, normalise_url, server_url
from prodplan_pipeline.warehouse.embedded import ensure_server_user, running_server_pid, stop_embedded_server
from prodplan_pipeline_tests.conftest import run_cli


@pytest.mark.parametrize("url", ["sqlite:///prodplan.db", "sqlite://", "mysql://root@localhost/db"])
def test_a_non_postgresql_url_is_refused_with_one_sentence(url):
    with pytest.raises(DatabaseConfigError) as error:
        server_url(Settings(home=Settings.from_env().home, database_url=url))
    message = str(error.value)
    assert "must be PostgreSQL" in message and "\n" not in message


def test_postgresql_urls_get_the_psycopg2_driver():
    assert normalise_url("postgresql://u@h:5432/db").drivername == "postgresql+psycopg2"
    assert normalise_url("postgres://u@h/db").drivername == "postgresql+psycopg2"


def test_cli_refuses_sqlite_without_a_traceback(clean_env):
    result = run_cli(["status"], {**clean_env, "PRODPLAN_DATABASE_URL": "sqlite:///x.db"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "must be PostgreSQL" in result.stderr


def test_cli_reports_an_unreachable_server_in_one_paragraph(clean_env):
    url = "postgresql://postgres@127.0.0.1:1/prodplan"
    result = run_cli(["status"], {**clean_env, "PRODPLAN_DATABASE_URL": url})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "cannot connect to PostgreSQL at" in result.stderr


def test_embedded_server_is_started_once_and_reused_by_a_second_process(clean_env, tmp_path):
    """Two real processes: the first starts the server, the second reuses it."""
    home = tmp_path / "home"
    try:
        first = run_cli(["status", "--json"], clean_env)
        assert first.returncode == 0, first.stderr
        pid = running_server_pid(home / "pgdata")
        assert pid is not None, "the server keeps running for the next command"
        second = run_cli(["status", "--json"], clean_env)
        assert second.returncode == 0, second.stderr
        assert running_server_pid(home / "pgdata") == pid, "reused, not restarted"
        statuses = [json.loads(r.stdout) for r in (first, second)]
        assert statuses[0]["database"] == statuses[1]["database"]
        assert "host=" in statuses[0]["database"], "the embedded server listens on a socket only"
        assert statuses[1]["schema"]["migrations_applied"] == statuses[0]["schema"]["migrations_applied"] > 0
    finally:
        stop_embedded_server(home / "pgdata")
    assert running_server_pid(home / "pgdata") is None


# Imported first ("ready"), then released together by a line on stdin: the race is in the call.
ENSURE_USER = (
    "import sys; from prodplan_pipeline.warehouse.embedded import ensure_server_user; "
    "print('ready', flush=True); sys.stdin.readline(); print(ensure_server_user(sys.argv[1]))"
)


def test_processes_creating_the_servers_user_at_once_all_get_the_same_user():
    """As root, pgserver runs PostgreSQL as a system user it creates; four processes at once
    (two test workers' first servers on a fresh machine) must each get that one user, where
    pgserver's own unlocked ``useradd`` raced (one "already exists"). Not root: no user."""
    name = f"prodplan_t{uuid.uuid4().hex[:8]}"  # never the real user: this test deletes it
    try:
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", ENSURE_USER, name],
                text=True,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(4)
        ]
        assert [p.stdout.readline() for p in processes] == ["ready\n"] * 4
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        results = [(p.wait(timeout=60), *p.communicate()) for p in processes]
        assert [code for code, _, _ in results] == [0] * 4, [err for _, _, err in results]
        uids = {out.strip() for _, out, _ in results}
        if os.geteuid() == 0:
            import pwd

            assert uids == {str(pwd.getpwnam(name).pw_uid)}
        else:
            assert uids == {"None"} and ensure_server_user(name) is None
    finally:
        if os.geteuid() == 0:
            subprocess.run(["userdel", "-r", name], capture_output=True)


# --- connections a process reuses (IDLE_CONNECTIONS) -------------------------------------------


def _backend(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


def test_a_returned_connection_serves_the_next_user_with_nothing_of_the_last(warehouse):
    """Reused, so an ingestion opens a handful of sessions rather than one per step, yet a new
    user sees a new session: no temp table, setting, advisory lock or open transaction."""
    with warehouse.connect() as conn:
        conn.autocommit = True
        first = _backend(conn)
        with conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE left_behind (x int)")
            cur.execute("SET statement_timeout = 1234")
            cur.execute("SELECT pg_advisory_lock(424242)")
    with warehouse.connect() as conn:
        assert _backend(conn) == first, "the idle connection is reused"
        assert conn.autocommit is False, "a reused connection starts a transaction like a new one"
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('pg_temp.left_behind'), current_setting('statement_timeout')")
            assert cur.fetchone() == (None, "0")
            cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
            assert cur.fetchone()[0] == 0


def test_a_connection_is_closed_after_an_error_and_a_dead_one_is_replaced(warehouse):
    with pytest.raises(psycopg2.errors.DivisionByZero):
        with warehouse.connect() as conn:
            failed = _backend(conn)
            with conn.cursor() as cur:
                cur.execute("SELECT 1 / 0")
    with warehouse.connect() as conn:
        idle = _backend(conn)
        assert idle != failed, "a connection that saw an error is not kept"
    # The server ends an idle session (a restart, an administrator): the next user gets a new
    # one instead of an error.
    admin = psycopg2.connect(libpq_dsn(warehouse.url))
    try:
        with admin, admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (idle,))
            assert cur.fetchone()[0]
    finally:
        admin.close()
    time.sleep(0.2)
    with warehouse.connect() as conn:
        assert _backend(conn) not in (idle, failed)
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
