"""Run the ingestion graph in this process, on Dagster's PostgreSQL instance (so the run shows up
in the UI), and turn the outcome into what `prodplan ingest` prints and returns."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from prodplan_pipeline import watermarks
from prodplan_pipeline.contract import SHEETS
from prodplan_pipeline.settings import Settings
from prodplan_pipeline.warehouse import Warehouse

EXIT_OK, EXIT_ERROR, EXIT_CHECK_FAILED = 0, 1, 2
SHEET_SUMMARY = """
    SELECT sheet, status, rows_excel, rows_inserted, rows_updated, rows_unchanged, rows_deleted,
           rows_duplicate, rows_rejected, rows_in_core, reconciled, seconds
    FROM ops.ingestion_sheet_runs WHERE run_id = %s
    ORDER BY array_position(%s::text[], sheet)"""


@dataclass
class IngestOutcome:
    exit_code: int
    dagster_run_id: str
    run_id: int | None = None
    sheets: list[dict] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    error: str | None = None
    report: Path | None = None
    seconds: float = 0.0
    analytics: list[dict] = field(default_factory=list)  # one entry per refresh run
    analytics_rows: dict[str, int] = field(default_factory=dict)  # rows now in each analytics table

    def as_json(self) -> dict:
        return {"exit_code": self.exit_code, "ingestion_run_id": self.run_id,
                "dagster_run_id": self.dagster_run_id, "seconds": round(self.seconds, 3),
                "error": self.error, "failed_checks": self.failed_checks,
                "report": str(self.report) if self.report else None, "sheets": self.sheets,
                "analytics": self.analytics, "analytics_rows": self.analytics_rows}


def show_progress(stream=None) -> None:
    """Print the assets' progress lines (logger ``prodplan.progress``) with elapsed seconds."""
    started = time.monotonic()

    class Elapsed(logging.Formatter):
        def format(self, record):
            return f"[{time.monotonic() - started:6.1f}s] {record.getMessage()}"

    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(Elapsed())
    logger = logging.getLogger("prodplan.progress")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def run_ingestion(settings: Settings, workbook: Path, force: bool = False,
                  job_name: str = "ingest_workbook") -> IngestOutcome:
    from dagster import DagsterInstance

    from prodplan_pipeline.orchestration.definitions import defs
    from prodplan_pipeline.orchestration.instance import dagster_environment
    from prodplan_pipeline.orchestration.partitions import INLINE_REFRESH_TAG

    os.environ.update(dagster_environment(settings))
    started = time.perf_counter()
    run_config = {
        "resources": {"workbook_file": {"config": {"path": str(workbook), "force": force}}},
        # The terminal gets our progress lines and one clear message; Dagster's own log (with
        # its stack traces) stays in its storage, for the UI.
        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
    }
    with DagsterInstance.get() as instance:
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, run_config=run_config, raise_on_error=False,
            tags={INLINE_REFRESH_TAG: "true"})  # refreshed below: the sensor need not
        outcome = _outcome(result)
        # one resolved warehouse for the whole follow-up (each resolution opens a connection)
        warehouse = Warehouse.from_settings(settings)
        _add_sheet_summary(outcome, warehouse, settings.reports)
        if outcome.exit_code == EXIT_OK and outcome.run_id is not None:
            _refresh_changed_days(instance, warehouse, outcome)
            outcome.analytics_rows = _analytics_rows(warehouse)
    outcome.seconds = time.perf_counter() - started
    return outcome


CHANGED_DAYS = "SELECT DISTINCT day FROM ops.changed_days WHERE run_id = %s"
# The last ingestion run whose changed days the daily aggregates include.
DAILY_AGGREGATES_WATERMARK = "daily_aggregates"
# Dagster records ~2 events per partition and asset (~20 ms each with PostgreSQL storage): a run
# over every day of six years spends minutes on bookkeeping for seconds of SQL, and each run
# costs ~2 s to start. Beyond these sizes (a first load, a large re-import) the same set-based
# refresh of exactly the changed days runs directly instead.
BULK_DAYS = 60
INLINE_RUNS = 8


ANALYTICS_TABLES = ("analytics.agg_phase_stats_daily", "analytics.agg_order_stats_daily",
                    "analytics.agg_quality_daily", "analytics.agg_wip_current")


def _analytics_rows(warehouse: Warehouse) -> dict[str, int]:
    with warehouse.connect() as conn, conn.cursor() as cur:
        counts = {}
        for table in ANALYTICS_TABLES:
            cur.execute(f"SELECT count(*) FROM {table}")
            counts[table] = cur.fetchone()[0]
    return counts


def _bulk_refresh(warehouse: Warehouse, outcome: IngestOutcome, ranges) -> None:
    from datetime import datetime, timedelta

    from prodplan_pipeline.analytics.aggregates import bump_cache_version, refresh_all
    from prodplan_pipeline.analytics.wip import refresh_views, refresh_wip

    started = time.perf_counter()
    with warehouse.connect() as conn:
        reports = [r for first, last in ranges for r in refresh_all(conn, first, last + timedelta(days=1))]
        refresh_wip(conn, datetime.now())
        refresh_views(conn)
        version = bump_cache_version(conn)
        watermarks.advance(conn, DAILY_AGGREGATES_WATERMARK, outcome.run_id)  # same transaction
    seconds = time.perf_counter() - started
    days = sum((last - first).days + 1 for first, last in ranges)
    logging.getLogger("prodplan.progress").info(
        f"daily aggregates of {days:,} changed days ({ranges[0][0]}..{ranges[-1][1]}): set-based, "
        f"{sum(r.rows_written for r in reports):,} rows in {seconds:.1f} s (outside Dagster's "
        "per-partition bookkeeping)")
    outcome.analytics.append({"first_day": ranges[0][0].isoformat(), "last_day": ranges[-1][1].isoformat(),
                              "days": days, "mode": "set-based bulk refresh", "seconds": round(seconds, 2),
                              "cache_version": version})


def _refresh_changed_days(instance, warehouse: Warehouse, outcome: IngestOutcome) -> None:
    """What the changed-days sensor does, done here synchronously: one aggregate run per range
    of consecutive days whose source rows this ingestion changed (WIP and views once each)."""
    from prodplan_pipeline.orchestration.definitions import defs
    from prodplan_pipeline.orchestration.partitions import (
        DAILY_REFRESH_JOB,
        contiguous_ranges,
        partition_days,
        range_tags,
    )

    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute(CHANGED_DAYS, (outcome.run_id,))
        inside, outside = partition_days(day for (day,) in cur.fetchall())
    if outside:  # e.g. an order finished in 2006: counted in the aggregates' metadata too
        logging.getLogger("prodplan.progress").info(
            f"{len(outside)} changed day(s) outside the daily partitions (e.g. {outside[0]}) not aggregated")
    ranges = contiguous_ranges(inside)
    if len(ranges) > INLINE_RUNS or sum((last - first).days + 1 for first, last in ranges) > BULK_DAYS:
        _bulk_refresh(warehouse, outcome, ranges)
        return
    job = defs.resolve_job_def(DAILY_REFRESH_JOB)
    for first, last in ranges:
        logging.getLogger("prodplan.progress").info(f"daily aggregates {first}..{last}")
        result = job.execute_in_process(instance=instance, tags=range_tags(first, last),
                                        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
                                        raise_on_error=False)
        outcome.analytics.append({"first_day": first.isoformat(), "last_day": last.isoformat(),
                                  "dagster_run_id": result.run_id, "success": result.success})
        if not result.success:
            outcome.exit_code = EXIT_ERROR
            outcome.error = f"the daily aggregates of {first}..{last} failed (Dagster run {result.run_id})"
            return
    with warehouse.connect() as conn:
        watermarks.advance(conn, DAILY_AGGREGATES_WATERMARK, outcome.run_id)  # every range committed


def _outcome(result) -> IngestOutcome:
    failed_checks, errors = [], []
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if not evaluation.passed and evaluation.severity.value == "ERROR":
                failed_checks.append(evaluation.asset_check_key.to_user_string())
        elif event.event_type_value == "STEP_FAILURE":
            errors.append(_failure_message(event))
    if failed_checks:
        code = EXIT_CHECK_FAILED
    elif errors or not result.success:
        code = EXIT_ERROR
    else:
        code = EXIT_OK
    return IngestOutcome(code, result.run_id, failed_checks=failed_checks,
                         error=" ".join(dict.fromkeys(errors)) or None)


def _failure_message(event) -> str:
    data = event.step_failure_data
    if data.user_failure_data and data.user_failure_data.description:
        return data.user_failure_data.description
    error = data.error
    while error.cause is not None:  # the user code's own exception, not Dagster's wrapper
        error = error.cause
    return f"step {event.step_key} failed: {error.message.strip()}"


def _add_sheet_summary(outcome: IngestOutcome, warehouse: Warehouse, reports: Path) -> None:
    from prodplan_pipeline.ingest.reconcile import REPORT_NAME
    from prodplan_pipeline.ingest.runs import run_id_for
    with warehouse.connect() as conn:
        try:
            outcome.run_id = run_id_for(conn, outcome.dagster_run_id)
        except LookupError:
            return  # the run failed before it was registered (e.g. not a workbook)
        with conn.cursor() as cur:
            cur.execute(SHEET_SUMMARY, (outcome.run_id, [s.name for s in SHEETS]))
            names = [d.name for d in cur.description]
            outcome.sheets = [dict(zip(names, row)) for row in cur.fetchall()]
            if outcome.exit_code != EXIT_OK:
                cur.execute("UPDATE ops.ingestion_runs SET status = %s, finished_at = "
                            "coalesce(finished_at, now()), message = coalesce(message, %s) "
                            "WHERE run_id = %s AND status = 'running'",
                            ("check_failed" if outcome.failed_checks else "failed", outcome.error,
                             outcome.run_id))
    report = reports / REPORT_NAME
    outcome.report = report if outcome.failed_checks and report.exists() else None
