"""Sensors and schedules that keep the warehouse fresh and raise alerts.

- ``workbook_sensor``: one ingestion run per workbook content the warehouse does not hold yet
  (it reads the last ingested SHA-256 from ops.ingestion_runs, so a CLI ingest counts).
- ``changed_days_sensor``: aggregate runs for exactly the daily partitions that a snapshot
  changed since they last reflected one (``ops.changed_days`` vs ``ops.aggregate_days``), one run
  per contiguous range; then the current layers and the views. It converges from these durable records, so a
  killed ingestion or refresh is caught up on a later tick.
- ``check_alert_sensor``: every failed asset check evaluation, blocking or not, alerts once. A
  failed non-blocking check leaves its run green, so a run-failure sensor alone would miss it.
- ``run_failure_alert_sensor``: every failed run alerts once.
- ``daily_refresh_schedule`` (06:00 Lisbon, yesterday's partition) and
  ``monthly_partition_maintenance_schedule`` (03:00 Lisbon on the 1st).

The ingestion and aggregate jobs are targeted by name (``job_name=``), so this module does not
import definitions.py (which imports it); the maintenance job is a plain @job, imported.
Everything is RUNNING by default: `prodplan ui` starts the daemon, and a user who starts it expects
the pipeline to keep itself fresh without clicking each sensor on. Stop them in the UI if not.
"""

# No `from __future__ import annotations`: Dagster inspects the sensor functions' annotations.
import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from dagster import (
    DagsterEventType,
    DagsterInvariantViolationError,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    EventRecordsFilter,
    RunFailureSensorContext,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    schedule,
    sensor,
)

from prodplan_pipeline import alerts
from prodplan_pipeline.analytics.convergence import RefreshRange, pending_work
from prodplan_pipeline.ingest import runs
from prodplan_pipeline.orchestration.analytics import UNPARTITIONED, refresh_selection
from prodplan_pipeline.orchestration.daily_partitions import (
    DAILY_REFRESH_JOB,
    INGEST_JOB,
    partition_bounds,
    range_tags,
)
from prodplan_pipeline.orchestration.maintenance import warehouse_maintenance_job
from prodplan_pipeline.orchestration.resources import SettingsResource, WarehouseResource
from prodplan_pipeline.plants import default_workbook
from prodplan_pipeline.warehouse.locks import INGESTION_LOCK, lock_holder_pid
from prodplan_pipeline.workbook.inspect import file_sha256

LISBON = "Europe/Lisbon"
SENSOR_INTERVAL_SECONDS = 30
# A workbook modified less than this long ago may still be being written (Excel, a copy over
# the network): hash it on a later tick rather than launch a run on half a file.
SETTLE_SECONDS = 5.0
# A bound on one tick's work, so a backlog never pushes a tick past Dagster's 60 s timeout (the
# workbook sensor requests at most one ingestion per tick: there is one workbook).
MAX_CHECK_EVALUATIONS_PER_TICK = 100
WEBHOOK_ATTEMPTS, WEBHOOK_BACKOFF, WEBHOOK_TIMEOUT = 3, 0.5, 3.0


def _load_cursor(cursor: str | None) -> dict:
    try:
        value = json.loads(cursor) if cursor else {}
    except json.JSONDecodeError:
        return {}  # an unreadable cursor (hand-edited, older format) is treated as none
    return value if isinstance(value, dict) else {}


# ---------------------------------------------------------------------------- workbook sensor


def _workbook_tick(path: Path, cursor: dict, now: float, last_ingested) -> SensorResult | SkipReason:
    """``last_ingested()``: (run_id, sha256) of the warehouse's last successful ingestion."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return SkipReason(
            f"workbook {path} does not exist (declare the ERP export with `prodplan plants add "
            "default --workbook PATH` or set PRODPLAN_WORKBOOK, or run `prodplan demo` to generate the sample)"
        )
    seen = {"mtime_ns": stat.st_mtime_ns, "size": stat.st_size}
    if all(cursor.get(key) == value for key, value in seen.items()):
        return SkipReason(f"workbook {path} unchanged since the last tick (same mtime and size)")
    if now - stat.st_mtime < SETTLE_SECONDS:
        return SkipReason(
            f"workbook {path} was modified {now - stat.st_mtime:.1f}s ago; waiting for the write to finish"
        )
    sha256 = file_sha256(path)  # streamed in 1 MiB blocks; the workbook is never parsed here
    new_cursor = json.dumps({**seen, "sha256": sha256})
    if sha256 == cursor.get("sha256"):
        return SensorResult(
            skip_reason=f"workbook {path} touched but its content is unchanged (sha256 {sha256[:12]})",
            cursor=new_cursor,
        )
    last_run, last_sha = last_ingested() or (0, None)
    if sha256 == last_sha:  # e.g. `prodplan ingest` or `prodplan demo` ingested it already
        return SensorResult(
            skip_reason=f"workbook {path} (sha256 {sha256[:12]}) is what the "
            f"warehouse holds already (ingestion run {last_run})",
            cursor=new_cursor,
        )
    # run_key: Dagster launches at most one run per key, ever. Content + the warehouse's last
    # run: the same export twice launches once, but content changed back to an older export
    # (while the warehouse holds a newer one) is ingested again.
    request = RunRequest(
        run_key=f"{sha256}-after-run-{last_run}",
        run_config={"resources": {"workbook_file": {"config": {"path": str(path)}}}},
        tags={"prodplan/workbook_sha256": sha256},
    )
    return SensorResult(run_requests=[request], cursor=new_cursor)


@sensor(
    job_name=INGEST_JOB,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Watches the default plant's workbook (plants.yaml, else PRODPLAN_WORKBOOK): stat "
    "every tick, SHA-256 when mtime/size changed, one ingestion run per content the warehouse "
    "does not hold yet (whichever launcher ingested the last one: this sensor, `prodplan ingest`, "
    "the launchpad).",
)
def workbook_sensor(context: SensorEvaluationContext, warehouse: WarehouseResource, settings: SettingsResource):
    def last_ingested():
        with warehouse.get_warehouse().connect() as conn:
            return runs.last_ingested(conn)

    path = default_workbook(settings.get())
    return _workbook_tick(path, _load_cursor(context.cursor), time.time(), last_ingested)


# ------------------------------------------------------------------------ changed-days sensor

IN_FLIGHT = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


def _refresh_request(snapshot: int, attempt: int, planned: RefreshRange | None) -> RunRequest:
    tags = {"prodplan/snapshot_run_id": str(snapshot)}
    if planned is None:  # the current layers and the views alone
        return RunRequest(run_key=f"converge-{snapshot}-{attempt}-current", asset_selection=UNPARTITIONED, tags=tags)
    first, last, selection = planned.first, planned.last, refresh_selection(planned)
    key = f"converge-{snapshot}-{attempt}-{first}-{last}"
    if first == last:  # a plain partition run: the UI shows it as that day's materialization
        return RunRequest(run_key=key, partition_key=first.isoformat(), tags=tags, asset_selection=selection)
    # One run over the whole range (the aggregates' backfill policy is single_run).
    return RunRequest(run_key=key, tags={**tags, **range_tags(first, last)}, asset_selection=selection)


def _refreshes_in_flight(context: SensorEvaluationContext) -> int:
    instance = _instance_or_none(context)
    if instance is None:
        return 0
    return len(instance.get_run_ids(RunsFilter(job_name=DAILY_REFRESH_JOB, statuses=IN_FLIGHT)))


def _instance_or_none(context: SensorEvaluationContext):
    try:
        return context.instance
    except DagsterInvariantViolationError:  # a context built in a test without an instance
        return None


@sensor(
    job_name=DAILY_REFRESH_JOB,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Brings the analytics layer up to the latest snapshot: requests refresh runs "
    "for exactly the daily partitions that a snapshot changed since the partition last "
    "reflected one (ops.changed_days vs ops.aggregate_days), whichever run changed them and "
    "whatever refresh was killed since; then the current layers and the views.",
)
def changed_days_sensor(context: SensorEvaluationContext, warehouse: WarehouseResource):
    cursor = _load_cursor(context.cursor)
    with warehouse.get_warehouse().connect() as conn:
        if lock_holder_pid(conn, INGESTION_LOCK) is not None:
            return SkipReason("an ingestion is running: it brings the analytics up to its snapshot itself")
        work = pending_work(conn, *partition_bounds())
    snapshot = work.snapshot
    notes = [work.outside_note()] if work.outside else []
    if not work.refreshes:
        return SkipReason("; ".join([f"every analytics layer reflects snapshot {snapshot}", *notes]))
    in_flight = _refreshes_in_flight(context)
    if in_flight:
        return SkipReason(f"{in_flight} refresh run(s) in flight; the pending work is re-checked after them")
    attempt = int(cursor.get("attempt", 0)) + 1  # a new key: the last attempt may have failed
    requests = [_refresh_request(snapshot, attempt, planned) for planned in work.refreshes]
    for note in notes:
        context.log.info(note)
    return SensorResult(run_requests=requests, cursor=json.dumps({"snapshot": snapshot, "attempt": attempt}))


# ---------------------------------------------------------------------------------- alerting


def _alert(log, payload: dict, webhook_url: str | None) -> bool:
    """Log the alert (always) and post it when a webhook is configured; True when delivered."""
    log.warning(alerts.to_log_line(payload))
    if not webhook_url:
        return True
    delivered = alerts.post_webhook(
        webhook_url, payload, attempts=WEBHOOK_ATTEMPTS, backoff=WEBHOOK_BACKOFF, timeout=WEBHOOK_TIMEOUT
    )
    if not delivered:
        log.error(f"alert webhook unreachable; alert not delivered: {payload['text']}")
    return delivered


# What check_alert_sensor reads: failed checks, and freshness policies gone FAIL (the daemon's
# freshness daemon records each change; open-source Dagster alerts on neither by itself).
ALERTED_EVENTS = (DagsterEventType.ASSET_CHECK_EVALUATION, DagsterEventType.FRESHNESS_STATE_CHANGE)
FRESHNESS_FAIL = "FAIL"  # Dagster's FreshnessState.FAIL, a str enum it does not export


def _events_after(storage, after_id: int, event_types, limit: int) -> list:
    """The first ``limit`` events of ``event_types`` after storage id ``after_id``, in order: a
    query per type, merged, so a cursor moved past the last one skips none of another type."""
    records = []
    for event_type in event_types:
        records += storage.get_event_records(
            EventRecordsFilter(event_type=event_type, after_cursor=after_id), limit=limit, ascending=True
        )
    return sorted(records, key=lambda r: r.storage_id)[:limit]


def _alert_payload(record, freshness_hours: float) -> dict | None:
    """The alert for a failed check or a freshness policy gone FAIL; None for any other."""
    dagster_event = record.event_log_entry.dagster_event
    if dagster_event.event_type == DagsterEventType.FRESHNESS_STATE_CHANGE:
        change = dagster_event.event_specific_data
        if change.new_state != FRESHNESS_FAIL:
            return None
        return alerts.format_freshness_alert(
            asset=change.key.to_user_string(), hours=freshness_hours, timestamp=record.timestamp
        )
    return None if dagster_event.event_specific_data.passed else _check_payload(record)


def _check_payload(record) -> dict:
    evaluation = record.event_log_entry.dagster_event.event_specific_data
    return alerts.format_check_alert(
        check_name=evaluation.check_name,
        asset=evaluation.asset_key.to_user_string(),
        severity=evaluation.severity.value,
        passed=evaluation.passed,
        blocking=evaluation.blocking,
        description=evaluation.description,
        partition=evaluation.partition,
        run_id=record.run_id,
        timestamp=record.timestamp,
    )


def _failure_message(context: RunFailureSensorContext) -> str:
    # The run's failure event says "Execution of run for X failed. Steps failed: [...]"; what
    # the first failed step says (as `prodplan ingest` prints it) is what the reader needs.
    parts = [context.failure_event.message or ""]
    step_failures = context.get_step_failure_events()
    if step_failures:
        parts.append(alerts.step_failure_text(step_failures[0]))
    return " | ".join(p for p in parts if p)


def alert_sensors(interval_seconds: int = SENSOR_INTERVAL_SECONDS):
    """(check_alert_sensor, run_failure_alert_sensor), ticking every ``interval_seconds``
    (PRODPLAN_ALERT_INTERVAL_SECONDS): how soon after a failure its alert goes out."""

    @sensor(
        minimum_interval_seconds=interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Alerts once per failed asset check evaluation (blocking or not): a log "
        "line and, with PRODPLAN_ALERT_WEBHOOK_URL, a Slack-compatible POST.",
    )
    def check_alert_sensor(context: SensorEvaluationContext, settings: SettingsResource):
        # Cursor = the last event storage id handled. A failed POST is not retried on later ticks
        # (the alert stays in the tick log); after one failure the rest of the tick only logs, so a
        # hanging webhook cannot push the tick past its 60 s timeout.
        storage = context.instance.event_log_storage
        if storage.is_run_sharded:  # per-run SQLite files have no global event order to follow
            return SkipReason(
                "check alerts need Dagster storage in PostgreSQL (as `prodplan ui` "
                "configures it); this instance's event log is sharded per run"
            )
        last_id = int(_load_cursor(context.cursor).get("last_storage_id", 0))
        records = _events_after(storage, last_id, ALERTED_EVENTS, MAX_CHECK_EVALUATIONS_PER_TICK)
        webhook_url = settings.get().alert_webhook_url
        failed = 0
        for record in records:
            last_id = record.storage_id
            payload = _alert_payload(record, settings.get().freshness_hours)
            if payload is None:
                continue
            failed += 1
            if not _alert(context.log, payload, webhook_url):
                webhook_url = None
        cursor = json.dumps({"last_storage_id": last_id})
        return SensorResult(
            cursor=cursor,
            skip_reason=f"{len(records)} check evaluation(s) and freshness change(s) read, {failed} alerted",
        )

    @run_failure_sensor(
        minimum_interval_seconds=interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Alerts once per failed run of any job of this code location.",
    )
    def run_failure_alert_sensor(context: RunFailureSensorContext, settings: SettingsResource):
        run = context.dagster_run
        payload = alerts.format_run_failure_alert(
            job_name=run.job_name, run_id=run.run_id, message=_failure_message(context), timestamp=time.time()
        )
        _alert(context.log, payload, settings.get().alert_webhook_url)

    return check_alert_sensor, run_failure_alert_sensor


# --------------------------------------------------------------------------------- schedules


def yesterday_partition(scheduled: datetime) -> str:
    """The daily partition before the scheduled day, counted in Lisbon time."""
    return (scheduled.astimezone(ZoneInfo(LISBON)).date() - timedelta(days=1)).isoformat()


@schedule(
    job_name=DAILY_REFRESH_JOB,
    cron_schedule="0 6 * * *",
    execution_timezone=LISBON,
    default_status=DefaultScheduleStatus.RUNNING,
    description="06:00 Lisbon: refresh yesterday's daily aggregates partition.",
)
def daily_refresh_schedule(context: ScheduleEvaluationContext):
    partition = yesterday_partition(context.scheduled_execution_time)
    return RunRequest(run_key=f"daily-refresh-{partition}", partition_key=partition)


monthly_partition_maintenance_schedule = ScheduleDefinition(
    name="monthly_partition_maintenance_schedule",
    job=warehouse_maintenance_job,
    cron_schedule="0 3 1 * *",
    execution_timezone=LISBON,
    default_status=DefaultScheduleStatus.RUNNING,
    description="03:00 Lisbon on the 1st: migrations, then monthly partitions 6 months ahead.",
)

# The alert sensors tick at the interval the settings give: see alert_sensors.
sensors = [workbook_sensor, changed_days_sensor]
schedules = [daily_refresh_schedule, monthly_partition_maintenance_schedule]
