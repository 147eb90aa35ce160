"""Staging, the first step each sheet goes through (the merge and the count check of all
sheets follow together, in one commit: see ``commit.py``).

Plain functions over a warehouse; the Dagster assets call them, and so can tests and
benchmarks. Every step records what it did in ``ops.ingestion_sheet_runs``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from prodplan_pipeline.contract import Sheet
from prodplan_pipeline.ingest import runs
from prodplan_pipeline.ingest.stage import stage_sheet
from prodplan_pipeline.warehouse import Warehouse
from prodplan_pipeline.workbook.inspect import WorkbookError, WorkbookInfo
from prodplan_pipeline.workbook.reader import read_sheet

READ_WORKERS = 2  # the machine's cores; more threads only contend


@dataclass(frozen=True)
class StageOutcome:
    sheet: str
    status: str  # staged | skipped_unchanged
    rows_excel: int
    rows_rejected: int
    seconds: float  # read + stage
    reason: str | None = None
    preview: list[dict] | None = None
    read_seconds: float = 0.0


def stage(warehouse: Warehouse, run_id: int, workbook: WorkbookInfo, sheet: Sheet, force: bool = False) -> StageOutcome:
    """Read the sheet into staging, unless its content equals the last merged snapshot's."""
    sha = workbook.sheet_sha256.get(sheet.name)
    with warehouse.connect() as conn:
        previous = runs.previous_sheet_run(conn, sheet.name, run_id)
        if not force and previous and previous.merged and previous.sheet_sha256 == sha:
            reason = f"content unchanged since run {previous.staged_run_id}"
            runs.record_sheet_run(
                conn,
                run_id=run_id,
                sheet=sheet.name,
                sha=sha,
                status="skipped_unchanged",
                staged_run_id=previous.staged_run_id,
                message=reason,
                rows_excel=previous.rows_excel,
                rows_duplicate=previous.rows_duplicate,
                rows_rejected=previous.rows_rejected,
                seconds=0.0,
            )
            return StageOutcome(
                sheet.name, "skipped_unchanged", previous.rows_excel, previous.rows_rejected, 0.0, reason
            )
    started = time.perf_counter()
    read = read_sheet(workbook, sheet)
    with warehouse.connect() as conn:
        rejected = stage_sheet(conn, read, run_id)
        seconds = time.perf_counter() - started
        runs.record_sheet_run(
            conn,
            run_id=run_id,
            sheet=sheet.name,
            sha=sha,
            status="staged",
            staged_run_id=run_id,
            message=None,
            rows_excel=read.rows_excel,
            rows_duplicate=0,
            rows_rejected=rejected,
            seconds=seconds,
        )
    preview = read.table.slice(0, 5).to_pylist()
    return StageOutcome(
        sheet.name, "staged", read.rows_excel, rejected, seconds, preview=preview, read_seconds=read.seconds
    )


def stage_all(
    warehouse: Warehouse,
    run_id: int,
    workbook: WorkbookInfo,
    sheets: list[Sheet],
    force: bool = False,
    workers: int = READ_WORKERS,
):
    """Stage several sheets at once, yielding (sheet, outcome or WorkbookError) as each finishes.

    The Rust reader releases the GIL, so two threads keep both cores busy: the 519k-row phase
    sheet (the long pole, started first) is parsed while the other sheets are read and copied."""
    ordered = sorted(sheets, key=lambda s: -workbook.sheet_sizes.get(s.name, 0))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stage") as pool:
        futures = {pool.submit(stage, warehouse, run_id, workbook, s, force): s for s in ordered}
        for future in as_completed(futures):
            try:
                yield futures[future], future.result()
            except WorkbookError as error:
                yield futures[future], error
