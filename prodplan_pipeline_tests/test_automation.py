"""Sensors and schedules, evaluated for real: a Dagster instance, PostgreSQL, files on disk and a
local HTTP server standing in for the Slack webhook."""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

import pytest
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    Output,
    SensorResult,
    SkipReason,
    asset,
    build_run_status_sensor_context,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
    job,
    materialize,
    op,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from prodplan_pipeline import alerts
from prodplan_pipeline.orchestration import automation
from prodplan_pipeline.orchestration.partitions import (
    MAX_REFRESH_RUNS,
    contiguous_ranges,
    partition_days,
    refresh_ranges,
)
from prodplan_pipeline.orchestration.resources import WarehouseResource
from prodplan_pipeline.warehouse import Warehouse
from prodplan_pipeline.workbook.inspect import file_sha256
from prodplan_pipeline.workbook.sample import write_sample


# ----------------------------------------------------------------------------------- helpers


def tick(sensor_def, cursor: dict | None = None, **context) -> tuple[list, dict | None, str | None]:
    """Evaluate a sensor once: (run requests, new cursor, skip message)."""
    raw = json.dumps(cursor) if cursor is not None else None
    result = sensor_def(build_sensor_context(cursor=raw, **context))
    if isinstance(result, SkipReason):
        return [], cursor, result.skip_message
    assert isinstance(result, SensorResult)
    skip = result.skip_reason.skip_message if result.skip_reason else None
    return list(result.run_requests or []), json.loads(result.cursor), skip


class Webhook:
    """A local HTTP server recording JSON POSTs; answers ``fail_first`` requests with HTTP 500."""

    def __init__(self, fail_first: int = 0):
        self.bodies: list[dict] = []
        self.requests = 0
        self.fail_first = fail_first
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.requests += 1
                failing = hook.requests <= hook.fail_first
                if not failing:
                    hook.bodies.append(json.loads(body))
                self.send_response(500 if failing else 200)
                self.end_headers()

            def log_message(self, *args):  # keep pytest output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def shutdown(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook(monkeypatch):
    hook = Webhook()
    monkeypatch.setenv("PRODPLAN_ALERT_WEBHOOK_URL", hook.url)
    monkeypatch.setattr(automation, "WEBHOOK_BACKOFF", 0.01)  # keep retries fast in tests
    yield hook
    hook.shutdown()


@pytest.fixture
def instance(databases):
    """A Dagster instance on PostgreSQL, like `prodplan ui`'s: the check alert sensor follows
    the event log's global order, which per-run SQLite shards do not have."""
    url = databases.create("dagster").render_as_string(hide_password=False)
    with instance_for_test(overrides={"storage": {"postgres": {"postgres_url": url}}}) as pg:
        yield pg


# --------------------------------------------------------------------------- workbook sensor


def set_mtime(path, seconds_ago: float) -> None:
    stamp = datetime.now().timestamp() - seconds_ago
    os.utime(path, (stamp, stamp))


def test_workbook_sensor_requests_one_run_per_distinct_content(clean_env, monkeypatch, tmp_path):
    path = tmp_path / "Folha_IA.xlsx"
    monkeypatch.setenv("PRODPLAN_WORKBOOK", str(path))

    requests, cursor, skip = tick(automation.workbook_sensor)
    assert not requests and "does not exist" in skip and cursor is None

    write_sample(path, scale=0.005, seed=1)
    requests, cursor, skip = tick(automation.workbook_sensor, cursor)
    assert not requests and "waiting for the write to finish" in skip  # just written

    set_mtime(path, 60)
    requests, cursor, _ = tick(automation.workbook_sensor, cursor)
    sha = file_sha256(path)
    assert [r.run_key for r in requests] == [sha]
    assert requests[0].run_config == {
        "resources": {"workbook_file": {"config": {"path": str(path)}}}}
    assert cursor == {"mtime_ns": path.stat().st_mtime_ns, "size": path.stat().st_size,
                      "sha256": sha}

    requests, cursor, skip = tick(automation.workbook_sensor, cursor)
    assert not requests and "unchanged" in skip

    set_mtime(path, 30)  # touched: new mtime, same bytes
    requests, cursor, skip = tick(automation.workbook_sensor, cursor)
    assert not requests and "content is unchanged" in skip
    assert cursor["mtime_ns"] == path.stat().st_mtime_ns

    write_sample(path, scale=0.005, seed=2)
    set_mtime(path, 20)
    requests, cursor, _ = tick(automation.workbook_sensor, cursor)
    assert [r.run_key for r in requests] == [file_sha256(path)] != [sha]
    assert cursor["sha256"] == file_sha256(path)

    path.unlink()
    requests, after, skip = tick(automation.workbook_sensor, cursor)
    assert not requests and "does not exist" in skip and after == cursor


# ----------------------------------------------------------------------- changed-days sensor

INSERT_RUN = """
    INSERT INTO ops.ingestion_runs (dagster_run_id, status, finished_at)
    VALUES (gen_random_uuid()::text, %s, CASE WHEN %s <> 'running' THEN now() END)
    RETURNING run_id"""


@pytest.fixture
def warehouse_resource(databases):
    url = databases.create("automation")
    Warehouse(url).migrate()
    return WarehouseResource(database_url=url.render_as_string(hide_password=False))


def add_ingestion(resource: WarehouseResource, status: str,
                  days: dict[str, list[str]] | None = None) -> int:
    with resource.get_warehouse().connect() as conn, conn.cursor() as cur:
        cur.execute(INSERT_RUN, (status, status))
        run_id = cur.fetchone()[0]
        for kind, kind_days in (days or {}).items():
            for day in kind_days:
                cur.execute("INSERT INTO ops.changed_days VALUES (%s, %s, %s)", (run_id, kind, day))
    return run_id


def set_status(resource: WarehouseResource, run_id: int, status: str) -> None:
    with resource.get_warehouse().connect() as conn, conn.cursor() as cur:
        cur.execute("UPDATE ops.ingestion_runs SET status = %s WHERE run_id = %s", (status, run_id))


def requested_range(request) -> tuple[str, str]:
    if request.partition_key:
        return request.partition_key, request.partition_key
    tags = request.tags
    return tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG]


def test_changed_days_sensor_requests_exactly_the_changed_partitions(warehouse_resource):
    resources = {"warehouse": warehouse_resource}
    before = add_ingestion(warehouse_resource, "succeeded", {"phase_event": ["2024-01-01"]})

    # First tick: starts after what already exists (the CLI refreshed that), requests nothing.
    requests, cursor, skip = tick(automation.changed_days_sensor, resources=resources)
    assert not requests and cursor == {"last_run_id": before} and "first tick" in skip

    run_id = add_ingestion(warehouse_resource, "succeeded", {
        "phase_event": ["2024-03-01", "2024-03-05", "2006-05-01"],
        "order_finish": ["2024-03-02"], "defect": ["2024-03-01"]})
    requests, cursor, _ = tick(automation.changed_days_sensor, cursor, resources=resources)
    assert [requested_range(r) for r in requests] == [("2024-03-01", "2024-03-02"),
                                                      ("2024-03-05", "2024-03-05")]
    assert [r.run_key for r in requests] == [f"changed-days-{run_id}-2024-03-01-2024-03-02",
                                             f"changed-days-{run_id}-2024-03-05-2024-03-05"]
    assert cursor == {"last_run_id": run_id}

    nothing = add_ingestion(warehouse_resource, "succeeded")
    requests, cursor, skip = tick(automation.changed_days_sensor, cursor, resources=resources)
    assert not requests and cursor == {"last_run_id": nothing} and "no changed days" in skip

    failed = add_ingestion(warehouse_resource, "failed", {"phase_event": ["2024-04-01"]})
    check_failed = add_ingestion(warehouse_resource, "check_failed", {"defect": ["2024-04-02"]})
    requests, cursor, _ = tick(automation.changed_days_sensor, cursor, resources=resources)
    assert not requests and cursor == {"last_run_id": check_failed} and failed < check_failed


def test_changed_days_sensor_waits_for_a_running_ingestion(warehouse_resource):
    resources = {"warehouse": warehouse_resource}
    running = add_ingestion(warehouse_resource, "running", {"order_finish": ["2024-05-10"]})
    requests, cursor, _ = tick(automation.changed_days_sensor, {"last_run_id": 0},
                               resources=resources)
    assert not requests and cursor == {"last_run_id": 0}

    set_status(warehouse_resource, running, "succeeded")
    requests, cursor, _ = tick(automation.changed_days_sensor, cursor, resources=resources)
    assert [requested_range(r) for r in requests] == [("2024-05-10", "2024-05-10")]
    assert cursor == {"last_run_id": running}


def test_only_days_outside_the_partitions_are_reported_not_requested(warehouse_resource):
    run_id = add_ingestion(warehouse_resource, "succeeded", {"phase_event": ["2006-05-01"]})
    requests, cursor, skip = tick(automation.changed_days_sensor, {"last_run_id": run_id - 1},
                                  resources={"warehouse": warehouse_resource})
    assert not requests and cursor == {"last_run_id": run_id}
    assert "outside the daily partitions" in skip and "2006-05-01" in skip


def requested_days(requests) -> set[date]:
    days = set()
    for request in requests:
        first, last = (date.fromisoformat(key) for key in requested_range(request))
        days |= {first + timedelta(n) for n in range((last - first).days + 1)}
    return days


def test_changed_days_sensor_after_real_ingestions(warehouse_resource, tmp_path):
    """End to end: a real ingestion's ops.changed_days are all requested, in at most
    MAX_REFRESH_RUNS runs (a first load changes days all over six years: the ranges separated by
    the smallest gaps are merged); an unchanged re-ingestion requests nothing."""
    from prodplan_pipeline.ingest.pipeline import ingest_workbook
    from prodplan_pipeline_tests.test_ingest import edited

    workbook = tmp_path / "Folha_IA.xlsx"
    write_sample(workbook, scale=0.005, seed=1)
    warehouse, resources = warehouse_resource.get_warehouse(), {"warehouse": warehouse_resource}
    first = ingest_workbook(warehouse, workbook).run_id
    requests, cursor, _ = tick(automation.changed_days_sensor, {"last_run_id": 0},
                               resources=resources)
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT DISTINCT day FROM ops.changed_days WHERE run_id = %s", (first,))
        changed, _outside = partition_days([day for (day,) in cur.fetchall()])
    assert changed and set(changed) <= requested_days(requests)
    assert len(requests) == len(refresh_ranges(changed)) == MAX_REFRESH_RUNS
    assert len(contiguous_ranges(changed)) > MAX_REFRESH_RUNS and cursor == {"last_run_id": first}

    again = ingest_workbook(warehouse, workbook).run_id
    requests, cursor, _ = tick(automation.changed_days_sensor, cursor, resources=resources)
    assert not requests and cursor == {"last_run_id": again}

    # a modified workbook: two closed phases get a new end a few days later -> exactly the old
    # and the new days of those rows are requested, nothing else
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute("""SELECT fase_of_id, fase_of_fim FROM core.fases_ordem_fabrico
                       WHERE fase_of_fim > fase_of_inicio AND fase_of_fim >= '2021-01-01'
                       ORDER BY fase_of_id LIMIT 2""")
        moved = dict(cur.fetchall())
    new_end = {pid: fim + timedelta(days=3) for pid, fim in moved.items()}

    def move_phase_ends(book):
        sheet = book["FasesOrdemFabrico"]
        for row in sheet.iter_rows(min_row=2):
            if row[0].value in new_end:
                row[3].value = new_end[row[0].value]  # FaseOf_Fim

    modified = edited(workbook, tmp_path / "moved.xlsx", move_phase_ends)
    third = ingest_workbook(warehouse, modified).run_id
    requests, cursor, _ = tick(automation.changed_days_sensor, cursor, resources=resources)
    expected = {d.date() for d in moved.values()} | {d.date() for d in new_end.values()}
    assert requested_days(requests) == expected and cursor == {"last_run_id": third}


@op
def noop():
    pass


@job
def inline_ingest_job():
    noop()


def test_changed_days_sensor_skips_ingestions_refreshed_by_their_launcher(
        warehouse_resource, instance):
    """`prodplan ingest` refreshes its changed days itself and tags its Dagster run so."""
    result = inline_ingest_job.execute_in_process(
        instance=instance, tags={automation.INLINE_REFRESH_TAG: "true"})
    run_id = add_ingestion(warehouse_resource, "succeeded", {"defect": ["2024-06-01"]})
    with warehouse_resource.get_warehouse().connect() as conn, conn.cursor() as cur:
        cur.execute("UPDATE ops.ingestion_runs SET dagster_run_id = %s WHERE run_id = %s",
                    (result.run_id, run_id))
    requests, cursor, skip = tick(automation.changed_days_sensor, {"last_run_id": run_id - 1},
                                  resources={"warehouse": warehouse_resource}, instance=instance)
    assert not requests and cursor == {"last_run_id": run_id} and "already refreshed" in skip


# --------------------------------------------------------------------------------- alerting


@asset(check_specs=[AssetCheckSpec("always_fails", asset="warn_probe"),
                    AssetCheckSpec("always_passes", asset="warn_probe")])
def warn_probe():
    yield Output(1)
    yield AssetCheckResult(check_name="always_fails", passed=False,
                           severity=AssetCheckSeverity.WARN, description="failed on purpose")
    yield AssetCheckResult(check_name="always_passes", passed=True)


@asset(check_specs=[AssetCheckSpec("only_passes", asset="pass_probe")])
def pass_probe():
    yield Output(1)
    yield AssetCheckResult(passed=True)


@asset(check_specs=[AssetCheckSpec("blocks", asset="blocking_probe", blocking=True)])
def blocking_probe():
    yield Output(1)
    yield AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR, description="bad")


def alert_lines(capfd) -> list[dict]:
    """The structured alert lines the sensor's logger printed (Dagster's console handler)."""
    err = capfd.readouterr().err
    return [json.loads(line.split("prodplan-alert ", 1)[1]) for line in err.splitlines()
            if "prodplan-alert " in line]


def test_check_alert_sensor_alerts_once_per_failed_evaluation(instance, webhook, capfd):
    result = materialize([warn_probe], instance=instance)
    assert result.success  # a failed WARN check leaves the run green: why this sensor exists

    capfd.readouterr()
    _, cursor, _ = tick(automation.check_alert_sensor, instance=instance)
    assert [body["check_name"] for body in webhook.bodies] == ["always_fails"]
    body = webhook.bodies[0]
    assert "warn_probe:always_fails" in body["text"] and "failed on purpose" in body["text"]
    assert body["severity"] == "WARN" and body["run_id"] == result.run_id
    assert [line["check_key"] for line in alert_lines(capfd)] == ["warn_probe:always_fails"]

    tick(automation.check_alert_sensor, cursor, instance=instance)
    assert len(webhook.bodies) == 1  # same evaluations, next tick: nothing more

    materialize([pass_probe], instance=instance)
    _, cursor, _ = tick(automation.check_alert_sensor, cursor, instance=instance)
    assert len(webhook.bodies) == 1

    assert not materialize([blocking_probe], instance=instance, raise_on_error=False).success
    _, cursor, _ = tick(automation.check_alert_sensor, cursor, instance=instance)
    assert [(b["check_name"], b["blocking"], b["severity"]) for b in webhook.bodies[1:]] == [
        ("blocks", True, "ERROR")]


def test_check_alert_sensor_survives_a_down_webhook(instance, webhook, caplog):
    webhook.shutdown()
    materialize([warn_probe], instance=instance)
    with caplog.at_level(logging.WARNING):
        requests, cursor, _ = tick(automation.check_alert_sensor, instance=instance)
    assert not requests and cursor["last_storage_id"] > 0
    assert "gave up after 3 attempts" in caplog.text
    assert "webhook attempt 3/3 failed" in caplog.text

    caplog.clear()  # the undelivered alert is not retried on later ticks
    _, after, _ = tick(automation.check_alert_sensor, cursor, instance=instance)
    assert after == cursor and "webhook attempt" not in caplog.text


def test_check_alert_sensor_skips_on_run_sharded_sqlite_storage():
    with instance_for_test() as sqlite_instance:
        requests, _, skip = tick(automation.check_alert_sensor, instance=sqlite_instance)
    assert not requests and "PostgreSQL" in skip


@op
def explode():
    raise ValueError("the warehouse caught fire")


@job
def doomed_job():
    explode()


def test_run_failure_sensor_posts_once(instance, webhook):
    result = doomed_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    context = build_run_status_sensor_context(
        sensor_name="run_failure_alert_sensor", dagster_event=result.get_run_failure_event(),
        dagster_instance=instance, dagster_run=result.dagster_run).for_run_failure()
    automation.run_failure_alert_sensor(context)
    assert len(webhook.bodies) == 1
    body = webhook.bodies[0]
    assert body["job_name"] == "doomed_job" and body["run_id"] == result.run_id
    assert "the warehouse caught fire" in body["message"] and "doomed_job" in body["text"]


def test_post_webhook_retries_with_backoff_then_delivers():
    hook = Webhook(fail_first=2)
    try:
        assert alerts.post_webhook(hook.url, {"text": "hello"}, attempts=3, backoff=0.01)
        assert hook.requests == 3 and hook.bodies == [{"text": "hello"}]
        assert not alerts.post_webhook(hook.url.replace("http", "nope"), {"text": "x"},
                                       attempts=2, backoff=0.01)  # never raises
    finally:
        hook.shutdown()


# -------------------------------------------------------------------------------- schedules


def test_daily_refresh_schedule_requests_yesterdays_partition_in_lisbon():
    for scheduled, expected in [
        (datetime(2025, 3, 10, 6, 0, tzinfo=ZoneInfo("Europe/Lisbon")), "2025-03-09"),
        # 06:00 Lisbon in summer is 05:00 UTC: still the same Lisbon day
        (datetime(2025, 7, 1, 5, 0, tzinfo=ZoneInfo("UTC")), "2025-06-30"),
    ]:
        request = automation.daily_refresh_schedule(
            build_schedule_context(scheduled_execution_time=scheduled))
        assert request.partition_key == expected
    assert automation.daily_refresh_schedule.execution_timezone == "Europe/Lisbon"
    assert automation.daily_refresh_schedule.cron_schedule == "0 6 * * *"


def test_monthly_maintenance_schedule_targets_the_maintenance_job():
    maintenance = automation.monthly_partition_maintenance_schedule
    assert maintenance.job_name == "warehouse_maintenance_job"
    assert (maintenance.cron_schedule, maintenance.execution_timezone) == ("0 3 1 * *",
                                                                          "Europe/Lisbon")
    assert {s.name for s in automation.sensors} == {
        "workbook_sensor", "changed_days_sensor", "check_alert_sensor",
        "run_failure_alert_sensor"}
