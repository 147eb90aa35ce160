"""Sensors and schedules, evaluated for real: a Dagster instance, PostgreSQL, files on disk and a
local HTTP server standing in for the Slack webhook."""

from __future__ import annotations

import json
import logging
import os
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
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
from prodplan_pipeline.analytics.convergence import MAX_REFRESH_RUNS, contiguous_ranges
from prodplan_pipeline.orchestration import automation
from prodplan_pipeline.orchestration.daily_partitions import partition_bounds, partition_days
from prodplan_pipeline.orchestration.resources import SettingsResource, WarehouseResource
from prodplan_pipeline.warehouse import Warehouse
from prodplan_pipeline.workbook.inspect import file_sha256
from prodplan_pipeline.workbook.sample import write_sample
from prodplan_pipeline_tests.webhook import Webhook

# The alert sensors as the definitions build them with the default interval.
CHECK_ALERT_SENSOR, RUN_FAILURE_ALERT_SENSOR = automation.alert_sensors()


# ----------------------------------------------------------------------------------- helpers


def tick(sensor_def, cursor: dict | None = None, **context) -> tuple[list, dict | None, str | None]:
    """Evaluate a sensor once: (run requests, new cursor, skip message). The settings resource
    reads the test's environment, as the deployment's reads its own."""
    raw = json.dumps(cursor) if cursor is not None else None
    context["resources"] = {"settings": SettingsResource(), **context.get("resources", {})}
    result = sensor_def(build_sensor_context(cursor=raw, **context))
    if isinstance(result, SkipReason):
        return [], cursor, result.skip_message
    assert isinstance(result, SensorResult)
    skip = result.skip_reason.skip_message if result.skip_reason else None
    return list(result.run_requests or []), json.loads(result.cursor), skip


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


def test_workbook_sensor_requests_one_run_per_distinct_content(clean_env, monkeypatch, tmp_path, warehouse_resource):
    path = tmp_path / "Folha_IA.xlsx"
    monkeypatch.setenv("PRODPLAN_WORKBOOK", str(path))
    resources = {"resources": {"warehouse": warehouse_resource}}

    requests, cursor, skip = tick(automation.workbook_sensor, **resources)
    assert not requests and "does not exist" in skip and cursor is None

    write_sample(path, scale=0.005, seed=1)
    requests, cursor, skip = tick(automation.workbook_sensor, cursor, **resources)
    assert not requests and "waiting for the write to finish" in skip  # just written

    set_mtime(path, 60)
    requests, cursor, _ = tick(automation.workbook_sensor, cursor, **resources)
    sha = file_sha256(path)
    assert [r.run_key for r in requests] == [f"{sha}-after-run-0"]  # the warehouse holds nothing
    assert requests[0].run_config == {"resources": {"workbook_file": {"config": {"path": str(path)}}}}
    assert cursor == {"mtime_ns": path.stat().st_mtime_ns, "size": path.stat().st_size, "sha256": sha}

    requests, cursor, skip = tick(automation.workbook_sensor, cursor, **resources)
    assert not requests and "unchanged" in skip

    set_mtime(path, 30)  # touched: new mtime, same bytes
    requests, cursor, skip = tick(automation.workbook_sensor, cursor, **resources)
    assert not requests and "content is unchanged" in skip
    assert cursor["mtime_ns"] == path.stat().st_mtime_ns

    write_sample(path, scale=0.005, seed=2)
    set_mtime(path, 20)
    requests, cursor, _ = tick(automation.workbook_sensor, cursor, **resources)
    assert [r.run_key for r in requests] == [f"{file_sha256(path)}-after-run-0"] != [f"{sha}-after-run-0"]
    assert cursor["sha256"] == file_sha256(path)

    path.unlink()
    requests, after, skip = tick(automation.workbook_sensor, cursor, **resources)
    assert not requests and "does not exist" in skip and after == cursor


def test_workbook_sensor_knows_what_any_launcher_ingested(clean_env, monkeypatch, tmp_path, warehouse_resource):
    """A workbook that `prodplan ingest` (or any run) ingested already launches nothing; one
    changed back to an older export while the warehouse holds a newer one is ingested again."""
    path = tmp_path / "Folha_IA.xlsx"
    monkeypatch.setenv("PRODPLAN_WORKBOOK", str(path))
    resources = {"resources": {"warehouse": warehouse_resource}}
    write_sample(path, scale=0.005, seed=1)
    set_mtime(path, 60)
    sha = file_sha256(path)
    with warehouse_resource.get_warehouse().connect() as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO ops.ingestion_runs (dagster_run_id, workbook_path, workbook_sha256, "
            "status, finished_at) VALUES ('cli', %s, %s, 'succeeded', now()) RETURNING run_id",
            (str(path), sha),
        )
        first_run = cur.fetchone()[0]
    requests, cursor, skip = tick(automation.workbook_sensor, **resources)
    assert not requests and f"ingestion run {first_run}" in skip and cursor["sha256"] == sha

    with warehouse_resource.get_warehouse().connect() as conn, conn.cursor() as cur:  # a newer export
        cur.execute(
            "INSERT INTO ops.ingestion_runs (dagster_run_id, workbook_path, workbook_sha256, "
            "status, finished_at) VALUES ('cli2', %s, 'other', 'succeeded', now()) RETURNING run_id",
            (str(path),),
        )
        newer_run = cur.fetchone()[0]
    set_mtime(path, 30)  # the old export copied back over it
    requests, _, _ = tick(automation.workbook_sensor, {**cursor, "sha256": "other"}, **resources)
    assert [r.run_key for r in requests] == [f"{sha}-after-run-{newer_run}"]


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


def add_snapshot(resource: WarehouseResource, days: dict[str, list[str]] | None = None) -> int:
    """A committed snapshot as the ingestion records it: a succeeded run, a merged sheet that
    changed core, and the days it changed."""
    with resource.get_warehouse().connect() as conn, conn.cursor() as cur:
        cur.execute(INSERT_RUN, ("succeeded", "succeeded"))
        run_id = cur.fetchone()[0]
        cur.execute(
            """INSERT INTO ops.ingestion_sheet_runs (run_id, sheet, status, rows_inserted,
                       rows_updated, rows_deleted, reconciled) VALUES (%s, 'Fases', 'merged', 1, 0, 0, true)""",
            (run_id,),
        )
        for kind, kind_days in (days or {}).items():
            for day in kind_days:
                cur.execute("INSERT INTO ops.changed_days VALUES (%s, %s, %s)", (run_id, kind, day))
    return run_id


def refresh(resource: WarehouseResource, first: str, last: str) -> None:
    """What a refresh run of first..last does to the durable records (core is empty here)."""
    from prodplan_pipeline.analytics.aggregates import AGGREGATES
    from prodplan_pipeline.analytics.convergence import refresh_days
    from prodplan_pipeline.orchestration.daily_partitions import partition_bounds

    with resource.get_warehouse().connect() as conn:
        for table in AGGREGATES:
            refresh_days(
                conn,
                table,
                date.fromisoformat(first),
                date.fromisoformat(last) + timedelta(days=1),
                *partition_bounds(),
            )


def refresh_current(resource: WarehouseResource) -> None:
    from prodplan_pipeline.analytics.convergence import CURRENT_LAYERS, refresh_current_layer, refresh_views_layer
    from prodplan_pipeline.orchestration.daily_partitions import partition_bounds

    with resource.get_warehouse().connect() as conn:
        for table in CURRENT_LAYERS:
            refresh_current_layer(conn, table)
        refresh_views_layer(conn, *partition_bounds())


def requested_range(request) -> tuple[str, str]:
    if request.partition_key:
        return request.partition_key, request.partition_key
    tags = request.tags
    return tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG]


def test_changed_days_sensor_converges_to_the_latest_snapshot(warehouse_resource):
    """Requests follow the durable records, not one run's delta: days stay requested until a
    refresh records that they reflect the snapshot, whatever happened to earlier requests."""
    resources = {"warehouse": warehouse_resource}
    refresh(warehouse_resource, "2020-01-01", "2020-01-01")  # not a first load
    run_id = add_snapshot(
        warehouse_resource,
        {
            "phase_event": ["2024-03-01", "2024-03-05", "2006-05-01"],
            "order_finish": ["2024-03-02"],
            "defect": ["2024-03-01"],
        },
    )
    requests, cursor, _ = tick(automation.changed_days_sensor, resources=resources)
    assert [requested_range(r) for r in requests] == [("2024-03-01", "2024-03-02"), ("2024-03-05", "2024-03-05")]
    assert [r.run_key for r in requests] == [
        f"converge-{run_id}-1-2024-03-01-2024-03-02",
        f"converge-{run_id}-1-2024-03-05-2024-03-05",
    ]
    # those runs were killed: the same days are requested again, under new run keys
    requests, cursor, _ = tick(automation.changed_days_sensor, cursor, resources=resources)
    assert [r.run_key for r in requests] == [
        f"converge-{run_id}-2-2024-03-01-2024-03-02",
        f"converge-{run_id}-2-2024-03-05-2024-03-05",
    ]
    refresh(warehouse_resource, "2024-03-01", "2024-03-02")  # one of them completed
    requests, cursor, _ = tick(automation.changed_days_sensor, cursor, resources=resources)
    assert [requested_range(r) for r in requests] == [("2024-03-05", "2024-03-05")]
    refresh(warehouse_resource, "2024-03-05", "2024-03-05")
    requests, cursor, _ = tick(automation.changed_days_sensor, cursor, resources=resources)
    assert [r.asset_selection for r in requests] == [automation.UNPARTITIONED]  # the current layers and views lag
    refresh_current(warehouse_resource)
    requests, cursor, skip = tick(automation.changed_days_sensor, cursor, resources=resources)
    assert not requests and f"every analytics layer reflects snapshot {run_id}" in skip
    assert "outside the daily partitions" in skip and "2006-05-01" in skip


def test_a_snapshot_that_changed_no_day_moves_only_the_current_layers(warehouse_resource):
    resources = {"warehouse": warehouse_resource}
    add_snapshot(warehouse_resource, {"defect": ["2024-06-01"]})
    refresh(warehouse_resource, "2024-06-01", "2024-06-01")
    refresh_current(warehouse_resource)
    employees_only = add_snapshot(warehouse_resource)
    requests, cursor, _ = tick(automation.changed_days_sensor, resources=resources)
    assert [r.asset_selection for r in requests] == [automation.UNPARTITIONED]
    refresh_current(warehouse_resource)
    requests, _, skip = tick(automation.changed_days_sensor, cursor, resources=resources)
    assert not requests and f"reflects snapshot {employees_only}" in skip


def test_changed_days_sensor_waits_for_a_running_ingestion(warehouse_resource):
    from prodplan_pipeline.warehouse.locks import INGESTION_LOCK, advisory_lock

    add_snapshot(warehouse_resource, {"order_finish": ["2024-05-10"]})
    other = Warehouse(warehouse_resource.get_warehouse().url)
    with other.connect() as conn, advisory_lock(conn, INGESTION_LOCK):
        # a lock taken by this process is re-entrant here: the sensor asks PostgreSQL who holds it
        requests, _, skip = tick(automation.changed_days_sensor, resources={"warehouse": warehouse_resource})
    assert not requests and "an ingestion is running" in skip
    requests, _, _ = tick(automation.changed_days_sensor, resources={"warehouse": warehouse_resource})
    # nothing was ever refreshed: a first load, from the partitions' start
    assert [requested_range(r) for r in requests] == [(partition_bounds()[0].isoformat(), "2024-05-10")]


def test_changed_days_sensor_waits_for_refresh_runs_in_flight(warehouse_resource, instance):
    from dagster import DagsterRunStatus
    from dagster._core.storage.dagster_run import DagsterRun

    from prodplan_pipeline.orchestration.daily_partitions import DAILY_REFRESH_JOB

    add_snapshot(warehouse_resource, {"order_finish": ["2024-05-10"]})
    run = instance.add_run(DagsterRun(job_name=DAILY_REFRESH_JOB, run_id="f" * 36, status=DagsterRunStatus.STARTED))
    resources = {"warehouse": warehouse_resource}
    requests, _, skip = tick(automation.changed_days_sensor, resources=resources, instance=instance)
    assert not requests and "1 refresh run(s) in flight" in skip
    instance.report_run_failed(run)
    requests, _, _ = tick(automation.changed_days_sensor, resources=resources, instance=instance)
    # nothing was ever refreshed: a first load, from the partitions' start
    assert [requested_range(r) for r in requests] == [(partition_bounds()[0].isoformat(), "2024-05-10")]


def requested_days(requests) -> set[date]:
    days = set()
    for request in requests:
        first, last = (date.fromisoformat(key) for key in requested_range(request))
        days |= {first + timedelta(n) for n in range((last - first).days + 1)}
    return days


def test_changed_days_sensor_after_real_ingestions(warehouse_resource, tmp_path):
    """End to end: a first load's changed days are all requested, in at most MAX_REFRESH_RUNS
    runs (the ranges separated by the smallest gaps are merged); once the layers caught up, an
    unchanged re-ingestion requests nothing, and a modified workbook exactly its days."""
    from prodplan_pipeline.analytics.rebuild import rebuild_downstream
    from prodplan_pipeline.ingest.pipeline import ingest_workbook
    from prodplan_pipeline_tests.workbook_edit import edited

    workbook = tmp_path / "Folha_IA.xlsx"
    write_sample(workbook, scale=0.005, seed=1)
    warehouse, resources = warehouse_resource.get_warehouse(), {"warehouse": warehouse_resource}
    first = ingest_workbook(warehouse, workbook).run_id
    requests, cursor, _ = tick(automation.changed_days_sensor, resources=resources)
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT DISTINCT day FROM ops.changed_days WHERE run_id = %s", (first,))
        changed, _outside = partition_days([day for (day,) in cur.fetchall()])
    # a first load: one single-run backfill from the partitions' start to the last changed day
    assert [requested_range(r) for r in requests] == [(partition_bounds()[0].isoformat(), max(changed).isoformat())]
    assert len(contiguous_ranges(changed)) > MAX_REFRESH_RUNS

    rebuild_downstream(warehouse)
    ingest_workbook(warehouse, workbook)
    requests, cursor, skip = tick(automation.changed_days_sensor, cursor, resources=resources)
    assert not requests and f"reflects snapshot {first}" in skip

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

    ingest_workbook(warehouse, edited(workbook, tmp_path / "moved.xlsx", move_phase_ends))
    requests, cursor, _ = tick(automation.changed_days_sensor, cursor, resources=resources)
    expected = {d.date() for d in moved.values()} | {d.date() for d in new_end.values()}
    assert requested_days(requests) == expected
    # only phases changed: the runs refresh the phase aggregate (and the current layers and the
    # views after it), not the orders' or the defects' aggregates
    phase_stats = AssetKey(["analytics", "agg_phase_stats_daily"])
    for request in requests:
        assert phase_stats in request.asset_selection
        assert not {
            AssetKey(["analytics", "agg_order_stats_daily"]),
            AssetKey(["analytics", "agg_quality_daily"]),
        } & set(request.asset_selection)
        assert set(automation.UNPARTITIONED) <= set(request.asset_selection)


# --------------------------------------------------------------------------------- alerting


@asset(
    check_specs=[
        AssetCheckSpec("always_fails", asset="warn_probe"),
        AssetCheckSpec("always_passes", asset="warn_probe"),
    ]
)
def warn_probe():
    yield Output(1)
    yield AssetCheckResult(
        check_name="always_fails", passed=False, severity=AssetCheckSeverity.WARN, description="failed on purpose"
    )
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
    return [json.loads(line.split("prodplan-alert ", 1)[1]) for line in err.splitlines() if "prodplan-alert " in line]


def test_check_alert_sensor_alerts_once_per_failed_evaluation(instance, webhook, capfd):
    result = materialize([warn_probe], instance=instance)
    assert result.success  # a failed WARN check leaves the run green: why this sensor exists

    capfd.readouterr()
    _, cursor, _ = tick(CHECK_ALERT_SENSOR, instance=instance)
    assert [body["check_name"] for body in webhook.bodies] == ["always_fails"]
    body = webhook.bodies[0]
    assert "warn_probe:always_fails" in body["text"] and "failed on purpose" in body["text"]
    assert body["severity"] == "WARN" and body["run_id"] == result.run_id
    assert [line["check_key"] for line in alert_lines(capfd)] == ["warn_probe:always_fails"]

    tick(CHECK_ALERT_SENSOR, cursor, instance=instance)
    assert len(webhook.bodies) == 1  # same evaluations, next tick: nothing more

    materialize([pass_probe], instance=instance)
    _, cursor, _ = tick(CHECK_ALERT_SENSOR, cursor, instance=instance)
    assert len(webhook.bodies) == 1

    assert not materialize([blocking_probe], instance=instance, raise_on_error=False).success
    _, cursor, _ = tick(CHECK_ALERT_SENSOR, cursor, instance=instance)
    assert [(b["check_name"], b["blocking"], b["severity"]) for b in webhook.bodies[1:]] == [("blocks", True, "ERROR")]


def report_freshness_change(instance, key: AssetKey, new_state: str) -> None:
    """A change of an asset's freshness state, recorded as the daemon's freshness daemon does."""
    from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

    instance._report_runless_asset_event(  # noqa: SLF001 - the daemon's own way to record it
        FreshnessStateChange(
            key=key,
            previous_state=FreshnessState.PASS,
            new_state=FreshnessState(new_state),
            state_change_timestamp=datetime.now().timestamp(),
        )
    )


def test_check_alert_sensor_alerts_when_a_freshness_policy_fails(instance, webhook):
    materialize([warn_probe], instance=instance)  # a failed check first: alerts keep the events' order
    report_freshness_change(instance, AssetKey("workbook"), "FAIL")
    report_freshness_change(instance, AssetKey(["core", "modelos"]), "WARN")
    report_freshness_change(instance, AssetKey(["core", "funcionarios"]), "FAIL")
    _, cursor, _ = tick(CHECK_ALERT_SENSOR, instance=instance)
    assert [(b["kind"], b.get("check_key") or b["asset"]) for b in webhook.bodies] == [
        ("asset_check_failed", "warn_probe:always_fails"),
        ("freshness_failed", "workbook"),
        ("freshness_failed", "core/funcionarios"),
    ]
    assert "no ingestion updated it within 26 h" in webhook.bodies[1]["text"]

    report_freshness_change(instance, AssetKey("workbook"), "PASS")  # ingested again: no alert
    _, cursor, _ = tick(CHECK_ALERT_SENSOR, cursor, instance=instance)
    assert len(webhook.bodies) == 3


def test_check_alert_sensor_survives_a_down_webhook(instance, webhook, caplog):
    webhook.shutdown()
    materialize([warn_probe], instance=instance)
    with caplog.at_level(logging.WARNING):
        requests, cursor, _ = tick(CHECK_ALERT_SENSOR, instance=instance)
    assert not requests and cursor["last_storage_id"] > 0
    assert "gave up after 3 attempts" in caplog.text
    assert "webhook attempt 3/3 failed" in caplog.text

    caplog.clear()  # the undelivered alert is not retried on later ticks
    _, after, _ = tick(CHECK_ALERT_SENSOR, cursor, instance=instance)
    assert after == cursor and "webhook attempt" not in caplog.text


def test_check_alert_sensor_skips_on_run_sharded_sqlite_storage():
    with instance_for_test() as sqlite_instance:
        requests, _, skip = tick(CHECK_ALERT_SENSOR, instance=sqlite_instance)
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
        sensor_name="run_failure_alert_sensor",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"settings": SettingsResource()},
    ).for_run_failure()
    RUN_FAILURE_ALERT_SENSOR(context)
    assert len(webhook.bodies) == 1
    body = webhook.bodies[0]
    assert body["job_name"] == "doomed_job" and body["run_id"] == result.run_id
    assert "the warehouse caught fire" in body["message"] and "doomed_job" in body["text"]


def test_post_webhook_retries_with_backoff_then_delivers():
    hook = Webhook(fail_first=2)
    try:
        assert alerts.post_webhook(hook.url, {"text": "hello"}, attempts=3, backoff=0.01)
        assert hook.requests == 3 and hook.bodies == [{"text": "hello"}]
        assert not alerts.post_webhook(
            hook.url.replace("http", "nope"), {"text": "x"}, attempts=2, backoff=0.01
        )  # never raises
    finally:
        hook.shutdown()


# -------------------------------------------------------------------------------- schedules


def test_daily_refresh_schedule_requests_yesterdays_partition_in_lisbon():
    for scheduled, expected in [
        (datetime(2025, 3, 10, 6, 0, tzinfo=ZoneInfo("Europe/Lisbon")), "2025-03-09"),
        # 06:00 Lisbon in summer is 05:00 UTC: still the same Lisbon day
        (datetime(2025, 7, 1, 5, 0, tzinfo=ZoneInfo("UTC")), "2025-06-30"),
    ]:
        request = automation.daily_refresh_schedule(build_schedule_context(scheduled_execution_time=scheduled))
        assert request.partition_key == expected
    # its cron and time zone, like every schedule's, are in the definitions snapshot
