"""Schema migrations: applied once each, idempotently, one process at a time."""

from __future__ import annotations

import shutil
import threading
import time

import psycopg2
import pytest

from prodplan_pipeline.warehouse.connection import libpq_dsn
from prodplan_pipeline.warehouse.locks import MIGRATIONS_LOCK, advisory_lock, lock_holder_pid
from prodplan_pipeline.warehouse.migrations import MigrationError, apply_migrations, discover

SCHEMA_SNAPSHOT = """
    SELECT table_schema, table_name, column_name, data_type, is_nullable, column_default
    FROM information_schema.columns
    WHERE table_schema IN ('staging', 'core', 'quarantine', 'ops', 'analytics')
    ORDER BY 1, 2, ordinal_position"""


def connect(url):
    return psycopg2.connect(libpq_dsn(url))


def snapshot(conn) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(SCHEMA_SNAPSHOT)
        columns = cur.fetchall()
        cur.execute("SELECT version, checksum FROM ops.schema_migrations ORDER BY version")
        return columns + cur.fetchall()


def test_migrations_apply_once_and_a_second_apply_changes_nothing(empty_database):
    conn = connect(empty_database)
    files = discover()
    assert [m.version for m in files] == sorted(m.version for m in files)
    assert apply_migrations(conn) == [m.version for m in files]
    first = snapshot(conn)
    assert apply_migrations(conn) == []
    assert snapshot(conn) == first
    with conn.cursor() as cur:
        cur.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname IN "
            "('staging', 'core', 'quarantine', 'ops', 'analytics') ORDER BY 1"
        )
        assert [r[0] for r in cur.fetchall()] == ["analytics", "core", "ops", "quarantine", "staging"]
    conn.close()


def test_a_concurrent_apply_waits_for_the_lock(empty_database):
    holder, waiter = connect(empty_database), connect(empty_database)
    messages: list[str] = []
    outcome: dict[str, object] = {}

    def apply_in_thread():
        outcome["applied"] = apply_migrations(waiter, log=messages.append)

    with advisory_lock(holder, MIGRATIONS_LOCK):
        thread = threading.Thread(target=apply_in_thread)
        thread.start()
        deadline = time.monotonic() + 10
        while not messages and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert thread.is_alive(), "the second apply must wait while the lock is held"
        assert messages and "waiting for the prodplan.migrations lock" in messages[0]
        assert str(holder.get_backend_pid()) in messages[0]
        with holder.cursor() as cur:
            cur.execute("SELECT to_regclass('ops.schema_migrations')")
            assert cur.fetchone()[0] is None, "nothing may be applied while the lock is held"
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert outcome["applied"] == [m.version for m in discover()]
    assert lock_holder_pid(holder, MIGRATIONS_LOCK) is None
    holder.close()
    waiter.close()


def test_two_simultaneous_applies_record_each_migration_once(empty_database):
    conns = [connect(empty_database) for _ in range(2)]
    results: list[list[str]] = []
    barrier = threading.Barrier(2)

    def run(conn):
        barrier.wait()
        results.append(apply_migrations(conn))

    threads = [threading.Thread(target=run, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(map(len, results)) == [0, len(discover())]
    with conns[0].cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT version) FROM ops.schema_migrations")
        assert cur.fetchone() == (len(discover()), len(discover()))
    for c in conns:
        c.close()


def test_an_edited_applied_migration_is_refused(empty_database, tmp_path):
    directory = tmp_path / "migrations"
    shutil.copytree(discover()[0].path.parent, directory)
    conn = connect(empty_database)
    apply_migrations(conn, directory)
    last = sorted(directory.glob("*.sql"))[-1]
    last.write_text(last.read_text() + "\n-- edited after release\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        apply_migrations(conn, directory)
    conn.close()


def test_a_failing_migration_rolls_back_and_is_not_recorded(empty_database, tmp_path):
    directory = tmp_path / "migrations"
    shutil.copytree(discover()[0].path.parent, directory)
    (directory / "999_broken.sql").write_text("CREATE TABLE ops.half_done (id int);\nSELECT no_such_function();\n")
    conn = connect(empty_database)
    with pytest.raises(MigrationError, match="999_broken.sql failed"):
        apply_migrations(conn, directory)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT to_regclass('ops.half_done'), (SELECT count(*) FROM ops.schema_migrations WHERE version = '999')"
        )
        assert cur.fetchone() == (None, 0)
    conn.close()


def test_the_snapshot_labels_wait_for_every_registered_analytics_layer(empty_database):
    """ops.snapshot_labels (SQL: it names the layers) says the analytics reflect a snapshot when
    every layer's watermark does, the feature gates' included (the API's gated answers read
    them). A layer added to a registry (an aggregate, a current layer) without the view's
    migration would be left out of the API's labels silently: caught here."""
    import re

    from prodplan_pipeline.analytics.convergence import LABELLED, LAYERS

    conn = connect(empty_database)
    apply_migrations(conn)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_get_viewdef('ops.snapshot_labels'::regclass)")
        definition = cur.fetchone()[0]
    conn.close()
    named = set(re.findall(r"'([a-z_]+(?:\.\w+)?)'", definition[definition.index("IN (") :]))
    assert named == set(LABELLED), f"the view names {sorted(named)}, the registries {sorted(LABELLED)}"
    assert set(LAYERS) < named and "feature_gates" in named
    assert f"count(*) = {len(LABELLED)}" in definition
