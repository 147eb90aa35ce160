"""What `prodplan ingest` reports and returns, and its answer for a workbook the warehouse
already reflects (no Dagster import: that answer costs a few queries)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from prodplan_pipeline.analytics.aggregates import AGGREGATES
from prodplan_pipeline.analytics.current import CURRENT_LAYERS
from prodplan_pipeline.settings import Settings
from prodplan_pipeline.up_to_date import reflected_run, unclosed_cli_runs
from prodplan_pipeline.warehouse import Warehouse
from prodplan_pipeline.warehouse.locks import INGESTION_LOCK, try_advisory_lock
from prodplan_pipeline.workbook.inspect import WorkbookInfo

EXIT_OK, EXIT_ERROR, EXIT_CHECK_FAILED = 0, 1, 2
ANALYTICS_TABLES = (*AGGREGATES, *CURRENT_LAYERS)


@dataclass
class IngestOutcome:
    exit_code: int
    dagster_run_id: str | None
    run_id: int | None = None
    sheets: list[dict] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    error: str | None = None
    report: Path | None = None
    seconds: float = 0.0
    analytics: list[dict] = field(default_factory=list)  # one entry per refresh run
    analytics_rows: dict[str, int] = field(default_factory=dict)  # rows now in each analytics table
    unchanged: bool = False  # the workbook is the snapshot every layer reflects: nothing was run
    quality: dict | None = None  # the quality reports' run beside the analytics, when it had one

    def as_json(self) -> dict:
        return {
            "exit_code": self.exit_code,
            "ingestion_run_id": self.run_id,
            "dagster_run_id": self.dagster_run_id,
            "unchanged": self.unchanged,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "failed_checks": self.failed_checks,
            "report": str(self.report) if self.report else None,
            "sheets": self.sheets,
            "analytics": self.analytics,
            "analytics_rows": self.analytics_rows,
            "quality": self.quality,
        }


def analytics_rows(warehouse: Warehouse) -> dict[str, int]:
    with warehouse.connect() as conn, conn.cursor() as cur:
        counts = {}
        for table in ANALYTICS_TABLES:
            cur.execute(f"SELECT count(*) FROM {table}")
            counts[table] = cur.fetchone()[0]
    return counts


def unchanged_outcome(settings: Settings, workbook: WorkbookInfo) -> IngestOutcome | None:
    """The outcome of ingesting ``workbook`` when the warehouse already reflects it in every
    layer, else None. Decided under the ingestion lock; while another ingestion holds it, None
    (the whole command then waits for it, and decides after)."""
    started = time.perf_counter()
    warehouse = Warehouse.from_settings(settings)
    with warehouse.connect() as conn, try_advisory_lock(conn, INGESTION_LOCK) as acquired:
        run_id = acquired and reflected_run(conn, workbook.sha256, settings.reports, settings.partitions_start)
        if run_id and unclosed_cli_runs(settings):  # a killed command's run: the whole way closes it
            run_id = None
    if not run_id:
        return None
    return IngestOutcome(
        EXIT_OK,
        None,
        run_id=run_id,
        unchanged=True,
        analytics_rows=analytics_rows(warehouse),
        seconds=time.perf_counter() - started,
    )
