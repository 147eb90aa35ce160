"""`prodplan ingest` as a user runs it: real subprocesses through the Dagster graph, their summaries
and exit codes, what an unchanged workbook is answered, the ingestion lock and the cache version.

The first ingest of the small workbook is done once (``first_ingest``): the test of a first run
asserts its output, and each test that starts where it ended works on its own copy of its
databases and home (``ingested_env``), so no test ingests it again only to get there. The module
runs whole on one worker (conftest.ONE_WORKER_MODULES), so that first ingest is done once.
The commands whose output and exit code a test is about run in a fresh interpreter (``run_cli``);
the runs that only bring the warehouse to the state a test needs, or whose subject is what
they leave in it, are forked from the fork server (``run_cli_forked``, ~4 s of imports less).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy.engine import make_url

from prodplan_pipeline.analytics.views import VIEWS
from prodplan_pipeline.warehouse import Warehouse
from prodplan_pipeline.warehouse.connection import libpq_dsn

from .conftest import (
    RECENT_PARTITIONS,
    REPO_ROOT,
    cli_environment,
    copied_environment,
    run_cli,
    run_cli_forked,
)
from .warehouse_queries import query, table_checksum
from .workbook_edit import edited, header_index


@dataclass(frozen=True)
class FirstIngest:
    env: dict[str, str]  # never written to again: the tests work on copies
    result: subprocess.CompletedProcess  # of `prodplan ingest --json`

    @property
    def summary(self) -> dict:
        return json.loads(self.result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def first_ingest(databases, small_sample, tmp_path_factory) -> FirstIngest:
    """The first `prodplan ingest --json` of the small workbook into fresh databases."""
    env = cli_environment(
        databases, tmp_path_factory.mktemp("first-ingest") / "home", "cli", PRODPLAN_PARTITIONS_START=RECENT_PARTITIONS
    )
    return FirstIngest(env, run_cli(["ingest", "--workbook", str(small_sample), "--json"], env))


@pytest.fixture
def ingested_env(first_ingest, databases, tmp_path) -> dict[str, str]:
    """An environment as that first ingest left it: a copy of its databases and home."""
    assert first_ingest.result.returncode == 0, first_ingest.result.stderr
    return copied_environment(databases, first_ingest.env, tmp_path / "home")


def test_prodplan_ingest_runs_the_dagster_graph_and_prints_a_summary(first_ingest, ingested_env, small_sample):
    first, summary = first_ingest.result, first_ingest.summary
    assert first.returncode == 0, first.stderr
    assert summary["exit_code"] == 0 and len(summary["sheets"]) == 9
    assert summary["analytics_rows"]["analytics.agg_phase_stats_daily"] > 0, "the whole graph ran"
    assert "analytics.agg_quality_daily" in first.stdout
    assert all(s["reconciled"] for s in summary["sheets"])
    assert "FasesOrdemFabrico" in first.stdout and "reconciled" in first.stdout
    assert "merged into core.fases_ordem_fabrico" in first.stderr, "progress per stage"
    assert f"analytics views: {len(VIEWS)} refreshed" in first.stderr, "the refresh's last step says so too"
    reports = Path(first_ingest.env["PRODPLAN_HOME"]) / "reports"
    assert "kpis_by_employee" in (reports / "FEATURE_GATES.md").read_text()
    assert "core.fases_ordem_fabrico" in (reports / "DATA_DICTIONARY.md").read_text()
    # The same workbook again (on a copy of that state): every layer reflects it, so nothing runs
    cli_env = ingested_env
    reports = Path(cli_env["PRODPLAN_HOME"]) / "reports"
    second = run_cli(["ingest", "--workbook", str(small_sample), "--json"], cli_env)
    unchanged = json.loads(second.stdout.strip().splitlines()[-1])
    assert second.returncode == 0 and unchanged["unchanged"] is True, second.stderr
    assert unchanged["dagster_run_id"] is None and unchanged["ingestion_run_id"] == summary["ingestion_run_id"]
    assert "workbook unchanged" in second.stdout and "merged into" not in second.stderr
    assert unchanged["analytics_rows"] == summary["analytics_rows"]
    # A layer behind the snapshot (its report deleted) sends the same workbook the whole way
    (reports / "DATA_DICTIONARY.md").unlink()
    third = run_cli_forked(["ingest", "--workbook", str(small_sample), "--json"], cli_env)
    again = json.loads(third.stdout.strip().splitlines()[-1])
    assert third.returncode == 0 and again["unchanged"] is False, third.stderr
    assert {s["status"] for s in again["sheets"]} == {"skipped_unchanged"}
    assert (reports / "DATA_DICTIONARY.md").exists(), "the next run repaired the layer"
    status = run_cli_forked(["status", "--json"], cli_env)
    runs = json.loads(status.stdout)["ingestion_runs"]
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"], "the unchanged answer recorded no run"


def test_an_unchanged_workbook_is_answered_only_when_every_layer_reflects_it(first_ingest, ingested_env, small_sample):
    from prodplan_pipeline.settings import Settings
    from prodplan_pipeline.up_to_date import reflected_run
    from prodplan_pipeline.workbook.inspect import file_sha256

    cli_env, run_id = ingested_env, first_ingest.summary["ingestion_run_id"]
    settings = Settings.from_env(cli_env)
    sha = file_sha256(small_sample)
    conn = psycopg2.connect(libpq_dsn(Warehouse(cli_env["PRODPLAN_DATABASE_URL"]).url))
    behind = {  # each a state that a killed or failed run leaves behind
        "a lagging aggregate": "UPDATE ops.watermarks SET value = '0' WHERE name = 'analytics.agg_quality_daily'",
        "a pending day": (
            "DELETE FROM ops.aggregate_days WHERE day = (SELECT min(a.day) FROM "
            "ops.aggregate_days a JOIN ops.changed_days c USING (day))"
        ),
        "gates not re-evaluated": "UPDATE ops.watermarks SET value = '0' WHERE name = 'feature_gates'",
        "expectations not run": "DELETE FROM ops.expectation_results WHERE table_name = 'core.modelos'",
        "an interrupted run": "INSERT INTO ops.ingestion_runs (dagster_run_id, workbook_path, workbook_sha256, "
        "forced) VALUES ('killed', 'x', 'y', false)",
    }
    try:
        assert reflected_run(conn, sha, settings.reports, settings.partitions_start) == run_id
        assert reflected_run(conn, "0" * 64, settings.reports, settings.partitions_start) is None
        for what, spoil in behind.items():
            with conn.cursor() as cur:
                cur.execute(spoil)
            assert reflected_run(conn, sha, settings.reports, settings.partitions_start) is None, what
            conn.rollback()  # one at a time: each alone must be enough
        assert reflected_run(conn, sha, settings.reports, settings.partitions_start) == run_id
        with conn.cursor() as cur:  # a killed run and a day it had changed, for real
            cur.execute(behind["an interrupted run"])
            cur.execute(behind["a pending day"])
        conn.commit()
    finally:
        conn.close()
    # the whole command repairs both (the interrupted run is closed, the day refreshed)
    again = run_cli_forked(["ingest", "--workbook", str(small_sample), "--json"], cli_env)
    repaired = json.loads(again.stdout.strip().splitlines()[-1])
    assert again.returncode == 0 and repaired["unchanged"] is False, again.stderr
    assert repaired["analytics"], "the pending day was refreshed"
    assert "interrupted" in again.stderr
    last = run_cli_forked(["ingest", "--workbook", str(small_sample), "--json"], cli_env)
    assert json.loads(last.stdout.strip().splitlines()[-1])["unchanged"] is True, last.stdout


def test_blocking_check_failure_exits_2_and_writes_the_mismatch_report(ingested_env, small_sample, tmp_path):
    cli_env = ingested_env

    def drop_half_of_the_orders(book):
        ws = book["OrdensFabrico"]
        ws.delete_rows(2, (ws.max_row - 1) // 2)

    shrunk = edited(small_sample, tmp_path / "half.xlsx", drop_half_of_the_orders)
    result = run_cli(["ingest", "--workbook", str(shrunk)], cli_env)
    assert result.returncode == 2, result.stderr
    report = Path(cli_env["PRODPLAN_HOME"]) / "reports" / "CRITICAL_MISMATCHES.md"
    text = report.read_text()
    assert "OrdensFabrico" in text and "expected" in text
    assert "more than the 20% allowed" in text
    assert "Traceback" not in result.stderr
    # the good workbook again: everything reconciles and the stale report is removed
    assert run_cli_forked(["ingest", "--workbook", str(small_sample), "--force"], cli_env).returncode == 0
    assert not report.exists()


def test_a_second_ingestion_waits_for_the_first(cli_env, small_sample):
    """The ingestion lock is held for a whole run: a second `prodplan ingest` says it waits,
    and goes on once the first is done."""
    from sqlalchemy.engine import make_url

    from prodplan_pipeline.warehouse.locks import INGESTION_LOCK, advisory_lock

    warehouse = Warehouse(make_url(cli_env["PRODPLAN_DATABASE_URL"]))
    warehouse.migrate()
    with warehouse.connect() as conn, advisory_lock(conn, INGESTION_LOCK):
        process = subprocess.Popen(
            [sys.executable, "-m", "prodplan_pipeline.cli", "ingest", "--workbook", str(small_sample)],
            env=cli_env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # the event itself: its backend queued behind this one's advisory lock
        deadline = time.monotonic() + 120
        while not query(
            warehouse,
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        ):
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the second ingestion never asked for the lock"
            time.sleep(0.05)
        assert process.poll() is None, "the second ingestion must wait while the lock is held"
        assert query(warehouse, "SELECT count(*) FROM ops.ingestion_sheet_runs")[0][0] == 0
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert "waiting for the prodplan.ingestion lock" in stderr


def test_the_json_summary_is_the_last_line_even_for_a_file_that_is_not_a_workbook(cli_env, tmp_path):
    bad = tmp_path / "notes.xlsx"
    bad.write_text("not a workbook")
    result = run_cli(["ingest", "--workbook", str(bad), "--json"], cli_env)
    assert result.returncode == 1
    document = json.loads(result.stdout.strip().splitlines()[-1])
    assert document["exit_code"] == 1 and "is not an Excel .xlsx workbook" in document["error"]
    assert "Traceback" not in result.stderr


def test_cache_version_moves_with_every_change_and_only_then(ingested_env, small_sample, tmp_path):
    from sqlalchemy.engine import make_url

    cli_env = ingested_env
    warehouse = Warehouse(make_url(cli_env["PRODPLAN_DATABASE_URL"]))

    def version() -> int:
        return query(warehouse, "SELECT version FROM ops.cache_version")[0][0]

    after_first = version()  # as the first ingest left it
    assert after_first >= 3, "ingestion, backfill and the aggregate refresh each bump it"
    assert run_cli_forked(["ingest", "--workbook", str(small_sample)], cli_env).returncode == 0
    assert version() == after_first, "nothing changed: cached answers stay valid"

    def rename_a_phase(book):
        book["Fases"]["B2"].value = "Laminagem (renamed)"

    changed = edited(small_sample, tmp_path / "renamed.xlsx", rename_a_phase)
    assert run_cli_forked(["ingest", "--workbook", str(changed)], cli_env).returncode == 0
    assert version() > after_first


def test_a_re_export_that_changes_only_phases_refreshes_only_the_aggregates_of_their_days(
    ingested_env, small_sample, tmp_path
):
    import datetime as dt

    from prodplan_pipeline.analytics.aggregates import AGGREGATES, refresh

    env = ingested_env
    warehouse = Warehouse(env["PRODPLAN_DATABASE_URL"])
    order_stats = "analytics.agg_order_stats_daily"

    def table_digest(table: str) -> str:
        with warehouse.connect() as conn, conn.cursor() as cur:
            return table_checksum(cur, table)

    def days_reflected(aggregate: str) -> list[tuple]:
        return query(
            warehouse,
            "SELECT day, snapshot_run_id FROM ops.aggregate_days WHERE aggregate = %s ORDER BY day",
            (aggregate,),
        )

    orders_before, order_days_before = table_digest(order_stats), days_reflected(order_stats)

    def move_phase_ends(book):  # 40 closed phases in the partitions end three days later
        sheet = book["FasesOrdemFabrico"]
        inicio, fim = (header_index(sheet, h) - 1 for h in ("FaseOf_Inicio", "FaseOf_Fim"))
        recent = dt.datetime.fromisoformat(RECENT_PARTITIONS)
        rows = [
            r for r in sheet.iter_rows(min_row=2) if isinstance(r[fim].value, dt.datetime) and r[inicio].value >= recent
        ]
        for row in rows[:40]:
            row[fim].value += dt.timedelta(days=3)

    result = run_cli_forked(
        ["ingest", "--workbook", str(edited(small_sample, tmp_path / "phases.xlsx", move_phase_ends)), "--json"], env
    )
    assert result.returncode == 0, result.stderr
    ranges = [a["refreshed"] for a in json.loads(result.stdout.strip().splitlines()[-1])["analytics"]]
    assert ranges and all("agg_phase_stats_daily" in r and order_stats not in r for r in ranges), ranges
    # the orders' aggregate was left as it was, yet reflects the new snapshot (nothing of it changed)
    assert table_digest(order_stats) == orders_before and days_reflected(order_stats) == order_days_before
    assert not query(warehouse, "SELECT aggregates_catching_up FROM ops.snapshot_labels")[0][0]
    # and every aggregate equals its recomputation from scratch over the days it reflects
    with warehouse.connect() as conn:
        try:
            for table, aggregate in AGGREGATES.items():
                before = table_digest(table)
                with conn.cursor() as cur:
                    cur.execute("SELECT min(day), max(day) FROM ops.aggregate_days WHERE aggregate = %s", (table,))
                    first, last = cur.fetchone()
                refresh(conn, aggregate, first, last + dt.timedelta(days=1))
                with conn.cursor() as cur:
                    assert table_checksum(cur, table) == before, table
        finally:
            conn.rollback()


def test_the_quality_reports_run_beside_the_analytics_in_a_dagster_run_of_their_own(first_ingest):
    from dagster._serdes import deserialize_value

    from prodplan_pipeline.orchestration.quality import BESIDE_ANALYTICS_ASSETS, BESIDE_ANALYTICS_CHECKS

    summary, stderr = first_ingest.summary, first_ingest.result.stderr
    quality = summary["quality"]
    assert quality["success"] is True and quality["dagster_run_id"] != summary["dagster_run_id"]
    env = first_ingest.env
    dagster = Warehouse(make_url(env["PRODPLAN_DATABASE_URL"]).set(database=env["PRODPLAN_DAGSTER_DATABASE"]))
    runs = {
        run.run_id: run for run in (deserialize_value(body) for (body,) in query(dagster, "SELECT run_body FROM runs"))
    }
    ingest, beside = runs[summary["dagster_run_id"]], runs[quality["dagster_run_id"]]
    assert beside.asset_selection == BESIDE_ANALYTICS_ASSETS
    assert beside.asset_check_selection == BESIDE_ANALYTICS_CHECKS
    assert not ingest.asset_selection & BESIDE_ANALYTICS_ASSETS
    assert not ingest.asset_check_selection & BESIDE_ANALYTICS_CHECKS
    assert any(key.name == "count_reconciliation" for key in ingest.asset_check_selection), "the blocking checks stay"
    assert beside.tags["prodplan/pid"] != ingest.tags["prodplan/pid"], "a process of its own"
    # started before the refresh, whose runs follow it
    assert stderr.index("beside the analytics") < stderr.index("analytics: ")
    assert {r["dagster_run_id"] for r in summary["analytics"]} <= set(runs)


def test_a_ranged_runs_materializations_are_stored_as_dagster_serializes_each(first_ingest):
    """The storage serializes a ranged run's per-day materializations once and puts each one's
    partition and time in (orchestration/storage.py): each stored text must be what Dagster's
    serdes makes of that event, and its columns the event's own."""
    from dagster._serdes import deserialize_value, serialize_value

    env = first_ingest.env
    dagster = Warehouse(make_url(env["PRODPLAN_DATABASE_URL"]).set(database=env["PRODPLAN_DAGSTER_DATABASE"]))
    rows = query(
        dagster,
        """SELECT event, partition, asset_key, step_key, timestamp FROM event_logs
                             WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND partition IS NOT NULL""",
    )
    assert len({(asset_key, partition) for _, partition, asset_key, _, _ in rows}) == len(rows) > 3 * 30
    for text, partition, asset_key, step_key, stored_at in rows:
        event = deserialize_value(text)
        assert serialize_value(event) == text
        assert event.dagster_event.partition == partition and event.dagster_event.asset_key.to_string() == asset_key
        assert event.dagster_event.step_key == step_key
        assert abs(stored_at.replace(tzinfo=UTC).timestamp() - event.timestamp) < 1e-3
    assert len({json.loads(text)["timestamp"] for text, *_ in rows}) > 1, "each event keeps its own time"
    # One aggregate's events of one run take the shared serialization; one that differs, not.
    from prodplan_pipeline.orchestration.storage import serialized_alike

    texts = [text for text, _, asset_key, _, _ in rows if asset_key == rows[0][2]]
    events = [deserialize_value(text) for text in texts]
    assert len(events) > 30 and serialized_alike(events) == texts
    other = events[1].dagster_event.event_specific_data.materialization._replace(description="another")
    odd = events[1]._replace(
        dagster_event=events[1].dagster_event._replace(
            event_specific_data=events[1].dagster_event.event_specific_data._replace(materialization=other)
        )
    )
    assert serialized_alike([events[0], odd, *events[2:]]) is None


def test_a_killed_commands_dagster_run_is_closed_even_when_every_layer_reflects_the_workbook(
    ingested_env, small_sample
):
    """A command killed after every layer was written (its quality run's last step, say) leaves
    its Dagster run STARTED; the quick answer cannot close it, so the same workbook goes the
    whole way once, which does."""
    import socket

    from dagster import DagsterRunStatus, instance_for_test
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.utils import make_new_run_id

    from prodplan_pipeline.up_to_date import CLI_LAUNCHER, HOST_TAG, LAUNCHED_BY_TAG, PID_TAG

    env = ingested_env
    storage = make_url(env["PRODPLAN_DATABASE_URL"]).set(database=env["PRODPLAN_DAGSTER_DATABASE"])
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no process has now
    tags = {LAUNCHED_BY_TAG: CLI_LAUNCHER, PID_TAG: str(gone.pid), HOST_TAG: socket.gethostname()}
    overrides = {"storage": {"postgres": {"postgres_url": storage.render_as_string(hide_password=False)}}}
    with instance_for_test(overrides=overrides) as instance:
        killed = instance.add_run(
            DagsterRun(job_name="ingest_workbook", run_id=make_new_run_id(), status=DagsterRunStatus.STARTED, tags=tags)
        )
    again = run_cli_forked(["ingest", "--workbook", str(small_sample), "--json"], env)
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["unchanged"] is False
    assert f"Dagster run {killed.run_id[:8]} (ingest_workbook) was interrupted" in again.stderr
    with instance_for_test(overrides=overrides) as instance:
        assert instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.FAILURE
    last = run_cli_forked(["ingest", "--workbook", str(small_sample), "--json"], env)
    assert json.loads(last.stdout.strip().splitlines()[-1])["unchanged"] is True, "closed: the quick answer again"
