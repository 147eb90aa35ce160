"""Run the ingestion graph in this process as a run of the code location (so the UI shows it,
can re-execute it, and the run-failure alert sees it), bring the analytics layers up to the
snapshot through Dagster runs, and turn the outcome into what `prodplan ingest` prints and
returns."""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from pathlib import Path

from prodplan_pipeline.alerts import step_failure_text
from prodplan_pipeline.analytics.convergence import lagging_layers, pending_work
from prodplan_pipeline.contract import SHEETS
from prodplan_pipeline.ingest.merge import DEFAULT_MAX_SHRINK
from prodplan_pipeline.ingest.reconcile import REPORT_NAME
from prodplan_pipeline.ingest.runs import close_failed_run, run_id_for, sheet_summaries
from prodplan_pipeline.orchestration.analytics import UNPARTITIONED, refresh_selection
from prodplan_pipeline.orchestration.daily_partitions import (
    DAILY_REFRESH_JOB,
    INGEST_JOB,
    partition_bounds,
    range_tags,
)
from prodplan_pipeline.orchestration.instance import dagster_environment, open_instance
from prodplan_pipeline.orchestration.interrupted import cli_run_tags, close_interrupted
from prodplan_pipeline.orchestration.location_runs import job_definition, run_job
from prodplan_pipeline.orchestration.quality import BESIDE_ANALYTICS_ASSETS, BESIDE_ANALYTICS_CHECKS
from prodplan_pipeline.orchestration.side_run import SideRun
from prodplan_pipeline.outcome import (
    EXIT_CHECK_FAILED,
    EXIT_ERROR,
    EXIT_OK,
    IngestOutcome,
    analytics_rows,
)
from prodplan_pipeline.quality.expectations import import_gx
from prodplan_pipeline.settings import Settings
from prodplan_pipeline.warehouse import Warehouse
from prodplan_pipeline.warehouse.locks import INGESTION_LOCK, advisory_lock


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


QUIET_CONSOLE = {"console": {"config": {"log_level": "CRITICAL"}}}  # Dagster's log stays in its storage


def run_ingestion(
    settings: Settings,
    workbook: Path,
    force: bool = False,
    max_shrink: float = DEFAULT_MAX_SHRINK,
    job_name: str = INGEST_JOB,
) -> IngestOutcome:
    """The whole command under the ingestion lock: close what a killed run left, ingest the
    workbook through the Dagster graph, then bring every analytics layer up to the latest
    snapshot, with the quality reports in a run of their own beside it. Exit 0 only when every
    layer reflects it."""
    os.environ.update(dagster_environment(settings))
    started = time.perf_counter()
    run_config = {
        "resources": {"workbook_file": {"config": {"path": str(workbook), "force": force, "max_shrink": max_shrink}}},
        "loggers": QUIET_CONSOLE,
    }
    # Forked before this process opens anything (side_run.py says why). None: one run does all.
    beside = SideRun.fork(functools.partial(_quality_run, settings, job_name, run_config), prepare=import_gx)
    warehouse = Warehouse.from_settings(settings)  # resolved once: each resolution connects
    with (
        open_instance() as instance,
        warehouse.connect() as lock_conn,
        advisory_lock(lock_conn, INGESTION_LOCK, on_wait=_say),
    ):
        try:
            close_interrupted(instance, warehouse)
            assets, checks = _snapshot_part(job_name) if beside else (None, None)
            result = run_job(
                instance,
                job_name,
                run_config=run_config,
                tags=cli_run_tags(),
                asset_selection=assets,
                asset_check_selection=checks,
            )
            outcome = _outcome(result, settings)
            _add_sheet_summary(outcome, warehouse, settings.reports)
            if outcome.exit_code == EXIT_OK and outcome.run_id is not None:
                if beside:
                    beside.start({})
                    _say(
                        "quality: data-quality issues, gates, dictionary and expectations in a run beside the analytics"
                    )
                converge(instance, warehouse, outcome, settings)
                if beside:
                    _add_quality(outcome, beside.answer())
                    beside = None
                outcome.analytics_rows = analytics_rows(warehouse)
        finally:
            if beside:  # not started: it exits; started: its run ends under this lock
                beside.cancel()
    outcome.seconds = time.perf_counter() - started
    return outcome


def _snapshot_part(job_name: str) -> tuple[frozenset, frozenset]:
    """The ingestion job without what runs beside the analytics: its assets and checks."""
    layer = job_definition(job_name).asset_layer
    assets = frozenset(layer.selected_asset_keys) - BESIDE_ANALYTICS_ASSETS
    return assets, frozenset(layer.asset_graph.get_check_keys_for_assets(assets)) - BESIDE_ANALYTICS_CHECKS


def _quality_run(settings: Settings, job_name: str, run_config: dict, _request: dict) -> dict:
    """In the forked child: the quality reports and checks of the snapshot just committed."""
    started = time.perf_counter()
    with open_instance() as instance:
        result = run_job(
            instance,
            job_name,
            run_config=run_config,
            tags=cli_run_tags(),
            asset_selection=BESIDE_ANALYTICS_ASSETS,
            asset_check_selection=BESIDE_ANALYTICS_CHECKS,
        )
    return {
        "dagster_run_id": result.run_id,
        "success": result.success,
        "seconds": round(time.perf_counter() - started, 2),
        "error": _outcome(result, settings).error,
    }


def _add_quality(outcome: IngestOutcome, answer: dict) -> None:
    outcome.quality = answer
    if not answer.get("success"):
        outcome.exit_code = EXIT_ERROR
        run = f" (Dagster run {answer['dagster_run_id']})" if answer.get("dagster_run_id") else ""
        failure = f"the quality reports' run{run} failed: {answer.get('error')}; the next run catches it up"
        outcome.error = f"{outcome.error} {failure}" if outcome.error else failure


def _say(message: str) -> None:
    logging.getLogger("prodplan.progress").info(message)


def converge(instance, warehouse: Warehouse, outcome: IngestOutcome, settings: Settings) -> None:
    """Refresh every aggregate day that a snapshot changed since the day last reflected one
    (whichever run changed it, and whatever refresh was killed since), then the current layers and the views:
    all of it through Dagster runs, so the UI shows every day the warehouse holds."""
    with warehouse.connect() as conn:
        work = pending_work(conn, *partition_bounds())
    for planned in work.refreshes:
        if not _refresh(instance, outcome, settings, planned):
            return
    with warehouse.connect() as conn:
        lagging = lagging_layers(conn)
    if lagging and None not in work.refreshes:  # a range run left a current layer, the views or a watermark behind
        if not _refresh(instance, outcome, settings, None):
            return
        with warehouse.connect() as conn:
            lagging = lagging_layers(conn)
    if lagging:
        outcome.exit_code = EXIT_ERROR
        outcome.error = f"the analytics layers {', '.join(lagging)} did not catch up with the snapshot"


def _refresh(instance, outcome: IngestOutcome, settings: Settings, planned) -> bool:
    """One refresh run: a range of days (then the current layers and the views), or (None) the
    current layers and the views alone."""
    if planned is None:
        return _dagster_refresh(instance, outcome, settings, {}, "current layers and views", UNPARTITIONED)
    label = f"{planned.first}..{planned.last} ({planned.days:,} days)"
    if not planned.every_aggregate:
        label += f" of {', '.join(planned.aggregates)}"
    return _dagster_refresh(
        instance, outcome, settings, range_tags(planned.first, planned.last), label, refresh_selection(planned)
    )


def _dagster_refresh(
    instance, outcome: IngestOutcome, settings: Settings, tags: dict, label: str, asset_selection=None
) -> bool:
    _say(f"analytics: {label}")
    started = time.perf_counter()
    result = run_job(
        instance,
        DAILY_REFRESH_JOB,
        tags={**tags, **cli_run_tags()},
        run_config={"loggers": QUIET_CONSOLE},
        asset_selection=asset_selection,
    )
    outcome.analytics.append(
        {
            "refreshed": label,
            "dagster_run_id": result.run_id,
            "success": result.success,
            "seconds": round(time.perf_counter() - started, 2),
        }
    )
    if not result.success:
        outcome.exit_code = EXIT_ERROR
        outcome.error = (
            f"the analytics refresh of {label} failed (Dagster run {result.run_id}): "
            f"{_outcome(result, settings).error}; the next run catches it up"
        )
    return result.success


def _outcome(result, settings: Settings) -> IngestOutcome:
    failed_checks, errors = [], []
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if not evaluation.passed and evaluation.severity.value == "ERROR":
                failed_checks.append(evaluation.asset_check_key.to_user_string())
        elif event.event_type_value == "STEP_FAILURE":
            errors.append(step_failure_text(event, settings))
    if failed_checks:
        code = EXIT_CHECK_FAILED
    elif errors or not result.success:
        code = EXIT_ERROR
    else:
        code = EXIT_OK
    return IngestOutcome(
        code, result.run_id, failed_checks=failed_checks, error=" ".join(dict.fromkeys(errors)) or None
    )


def _add_sheet_summary(outcome: IngestOutcome, warehouse: Warehouse, reports: Path) -> None:
    with warehouse.connect() as conn:
        try:
            outcome.run_id = run_id_for(conn, outcome.dagster_run_id)
        except LookupError:
            return  # the run failed before it was registered (e.g. not a workbook)
        outcome.sheets = sheet_summaries(conn, outcome.run_id, [s.name for s in SHEETS])
        if outcome.exit_code != EXIT_OK:
            close_failed_run(conn, outcome.run_id, "check_failed" if outcome.failed_checks else "failed", outcome.error)
    report = reports / REPORT_NAME
    outcome.report = report if outcome.failed_checks and report.exists() else None
