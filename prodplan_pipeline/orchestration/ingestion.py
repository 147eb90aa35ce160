"""Ingestion assets, generated from the contract: the workbook, one raw asset and one core asset
per sheet (computed by two multi-asset steps), and the blocking count-reconciliation check on
every core asset.

The assets only wire Dagster to the plain steps in ``prodplan_pipeline.ingest``; what they add is
what a data engineer wants to see in the UI: row counts by outcome, seconds, hashes, previews.
"""

# No `from __future__ import annotations`: Dagster inspects the context annotations.
import logging
from dataclasses import replace
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)

from prodplan_pipeline.contract import SHEETS, Sheet
from prodplan_pipeline.ingest import runs, steps
from prodplan_pipeline.ingest.commit import SnapshotCommit
from prodplan_pipeline.ingest.reconcile import write_mismatch_report
from prodplan_pipeline.orchestration.resources import (
    IngestionLockResource,
    SettingsResource,
    WarehouseResource,
    WorkbookResource,
)
from prodplan_pipeline.orchestration.table_metadata import (
    ROW_COUNT,
    core_schema,
    count_rows,
    share,
    staging_schema,
    table_definition,
)
from prodplan_pipeline.workbook.inspect import WorkbookError, inspect_workbook

COUNT_RECONCILIATION = "count_reconciliation"
WORKBOOK_ASSET = AssetKey("workbook")
OWNERS = ["team:data-engineering"]
progress = logging.getLogger("prodplan.progress")


def say(context, message: str) -> None:
    """To the Dagster run log, and to the terminal of `prodplan ingest`."""
    context.log.info(message)
    progress.info(message)


def raw_key(sheet: Sheet) -> AssetKey:
    return AssetKey(["raw", sheet.table])


def core_key(sheet: Sheet) -> AssetKey:
    return AssetKey(["core", sheet.table])


def _raw_description(sheet: Sheet) -> str:
    return (
        f"Sheet {sheet.name} ({sheet.description}) read with the calamine reader, typed per the "
        f"contract, landed in {sheet.staging_table}. Cells that do not fit their type make the "
        "row a reject in quarantine.rejects (reason, column, raw value, Excel row). Skipped when "
        "the sheet's content is identical to the last merged snapshot."
    )


def _core_description(sheet: Sheet) -> str:
    key = ", ".join(sheet.key) if sheet.key else "row fingerprint + occurrence (no source key)"
    return (
        f"{sheet.core_table}: {sheet.description} Key: {key}. Merged from staging: new keys "
        "inserted, changed rows updated, identical rows untouched, keys gone from the "
        "snapshot deleted (refused when the sheet shrinks by more than the shrink limit)."
    )


def _inspect(path, workbook_file: WorkbookResource) -> object:
    try:
        return inspect_workbook(path, workbook_file.max_uncompressed())
    except WorkbookError as error:
        raise Failure(description=str(error), allow_retries=False) from None


@asset(key=WORKBOOK_ASSET, group_name="raw", kinds={"excel"}, owners=OWNERS)
def workbook(
    context: AssetExecutionContext,
    warehouse: WarehouseResource,
    workbook_file: WorkbookResource,
    ingestion_lock: IngestionLockResource,
) -> MaterializeResult:
    """The ERP export Folha_IA.xlsx: checked to be a readable .xlsx, hashed as a whole and per
    sheet (from the zip's stored bytes, no cell parsed), and registered as an ingestion run."""
    source = workbook_file.resolved_path()
    _inspect(source, workbook_file)  # a file that is not a workbook is refused naming the user's path
    copy, _ = workbook_file.private_copy()
    info = replace(_inspect(copy, workbook_file), source=source)
    with warehouse.get_warehouse().connect() as conn:
        for closed_id, _, started_at in runs.close_interrupted(conn):  # under the ingestion lock
            say(
                context,
                f"ingestion run {closed_id} (started {started_at:%Y-%m-%d %H:%M:%S}) was "
                "interrupted before it finished: marked 'interrupted'",
            )
        run_id = runs.start_run(conn, context.run.run_id, info, workbook_file.force)
    missing = [s.name for s in SHEETS if s.name not in info.sheet_parts]
    say(context, f"workbook {source.name}: {info.size / 1e6:.1f} MB, sha256 {info.sha256[:12]}, ingestion run {run_id}")
    return MaterializeResult(
        metadata={
            "path": str(source),
            "copy_read": str(copy),
            "sha256": info.sha256,
            "bytes": info.size,
            "ingestion_run_id": run_id,
            "sheets": ", ".join(info.sheet_names),
            "missing_sheets": ", ".join(missing) or "none",
        }
    )


RAW_SPECS = [
    AssetSpec(
        raw_key(s),
        deps=[WORKBOOK_ASSET],
        group_name="raw",
        kinds={"excel", "postgres"},
        owners=OWNERS,
        description=_raw_description(s),
        skippable=True,
        metadata=table_definition(s.staging_table, staging_schema(s)),
    )
    for s in SHEETS
]
CORE_SPECS = [
    AssetSpec(
        core_key(s),
        deps=[raw_key(s)],
        group_name="core",
        kinds={"postgres"},
        owners=OWNERS,
        description=_core_description(s),
        skippable=True,
        metadata=table_definition(s.core_table, core_schema(s)),
    )
    for s in SHEETS
]
COUNT_CHECKS = [
    AssetCheckSpec(
        COUNT_RECONCILIATION,
        asset=core_key(s),
        blocking=True,
        description=f"Every data row of sheet {s.name} is accounted for: "
        "Excel rows = rows in core from this snapshot + duplicates "
        "collapsed + rejected.",
    )
    for s in SHEETS
]


@multi_asset(specs=[*RAW_SPECS, *CORE_SPECS], check_specs=COUNT_CHECKS, can_subset=True, name="snapshot")
def snapshot(
    context: AssetExecutionContext,
    warehouse: WarehouseResource,
    workbook_file: WorkbookResource,
    ingestion_lock: IngestionLockResource,
    settings: SettingsResource,
):
    """Stage every sheet, and merge each into the snapshot's single transaction as soon as it
    is staged: the merges run in PostgreSQL while the sheets still being read are parsed (one
    after the other took ~1.3x as long). The workbook is one snapshot, so the commit comes
    after every sheet is staged, merged and counted; a refused sheet leaves every core table as
    it was. A broken sheet fails the step after every sheet was tried, so the message lists
    every problem, and nothing of a broken export is committed."""
    wh = warehouse.get_warehouse()
    with wh.connect() as conn:
        run_id, sha256 = runs.run_id_for(conn, context.run.run_id), runs.workbook_sha256(conn, context.run.run_id)
        # The bytes the workbook step hashed, whatever the user's path holds by now.
        info = replace(_inspect(workbook_file.copy_of(sha256), workbook_file), source=workbook_file.resolved_path())
        merging = _selected(context, core_key)
    with SnapshotCommit(wh, run_id, merging, workbook_file.shrink_limit()) as commit:
        yield from _stage(context, wh, run_id, info, workbook_file, commit)
        if merging:
            yield from _commit(context, wh, run_id, settings.get().reports, commit)


def _stage(context, wh, run_id: int, info, workbook_file, commit: SnapshotCommit):
    problems = []
    for sheet, outcome in steps.stage_all(wh, run_id, info, _selected(context, raw_key), force=workbook_file.force):
        if isinstance(outcome, WorkbookError):
            problems.append((SHEETS.index(sheet), str(outcome)))
            continue
        say(
            context,
            f"{sheet.name}: {outcome.status.replace('_', ' ')}, {outcome.rows_excel:,} rows, "
            f"{outcome.rows_rejected:,} rejected ({outcome.seconds:.2f} s)",
        )
        yield MaterializeResult(
            asset_key=raw_key(sheet), metadata=_stage_metadata(outcome, info, sheet, _staged_rows(wh, outcome, sheet))
        )
        if not problems and sheet in commit.sheets:
            commit.staged(sheet)
    if problems:
        # in the contract's order, whichever sheet's reader finished first; nothing committed
        raise Failure(description=" ".join(text for _, text in sorted(problems)), allow_retries=False)


def _staged_rows(wh, outcome, sheet: Sheet) -> int:
    """Staging's size: a staged sheet's COPY wrote exactly its Excel rows; a skipped one holds
    whatever the last read left (nothing, after a crash recovery), so it is counted."""
    if outcome.status == "staged":
        return outcome.rows_excel
    with wh.connect() as conn:
        return count_rows(conn, sheet.staging_table)


def _stage_metadata(outcome, info, sheet: Sheet, staged_rows: int) -> dict:
    metadata = {
        ROW_COUNT: staged_rows,
        "status": outcome.status,
        "rows_excel": outcome.rows_excel,
        "rows_rejected": outcome.rows_rejected,
        "reject_rate": share(outcome.rows_rejected, outcome.rows_excel),
        "seconds": round(outcome.seconds, 3),
        "sheet_sha256": info.sheet_sha256.get(sheet.name, ""),
    }
    if outcome.reason:
        metadata["skipped_reason"] = outcome.reason
    if outcome.preview:
        metadata["preview"] = MetadataValue.md(_markdown_table(outcome.preview))
    return metadata


def _commit(context, wh, run_id: int, reports: Path, commit: SnapshotCommit):
    """Finish the snapshot's transaction, then report every core table and its count check."""
    outcome = commit.finish()
    if not outcome.committed:
        say(context, f"snapshot not committed: {outcome.message}")
    for sheet in commit.sheets:
        merged, checked = outcome.merged[sheet.name], outcome.reconciled[sheet.name]
        yield MaterializeResult(asset_key=core_key(sheet), metadata=_merge_metadata(context, merged, checked, sheet))
        yield _reconciliation_result(context, checked, sheet)
    report = write_mismatch_report(wh, run_id, reports)
    if report:
        say(context, f"blocking count checks failed: see {report}")


def _selected(context, key_of) -> list[Sheet]:
    selected = context.selected_asset_keys
    return [s for s in SHEETS if key_of(s) in selected]


def _merge_metadata(context, outcome, checked, sheet: Sheet) -> dict:
    """Numbers on every status, so plots have no gaps: a skipped, refused or rolled-back sheet
    wrote no row (0), and the count check's figures describe the snapshot core holds. The row
    count is the one the check took inside the commit (or after the rollback): the table's size
    when the run ends, without a second scan."""
    metadata = {
        ROW_COUNT: checked.core_rows,
        "status": outcome.status,
        "table": sheet.core_table,
        "rows_inserted": 0,
        "rows_updated": 0,
        "rows_deleted": 0,
        "rows_excel": checked.rows_excel,
        "rows_in_core": checked.rows_in_core,
        "rows_duplicate": checked.rows_duplicate,
        "rows_rejected": checked.rows_rejected,
        "reject_rate": share(checked.rows_rejected, checked.rows_excel),
    }
    if outcome.counts:
        c = outcome.counts
        metadata.update(
            rows_inserted=c.inserted,
            rows_updated=c.updated,
            rows_unchanged=c.unchanged,
            rows_deleted=c.deleted,
            rows_duplicate=c.duplicate,
            rows_rejected_duplicate_key=c.rejected_duplicate_key,
            seconds=round(c.seconds, 3),
        )
        say(
            context,
            f"{sheet.name}: merged into {sheet.core_table}: +{c.inserted:,} "
            f"~{c.updated:,} ={c.unchanged:,} -{c.deleted:,} ({c.seconds:.2f} s)",
        )
    else:
        say(context, f"{sheet.name}: {outcome.status.replace('_', ' ')}: {outcome.message}")
        metadata["message"] = outcome.message or ""
    return metadata


def _reconciliation_result(context, result, sheet: Sheet) -> AssetCheckResult:
    if not result.passed:
        say(context, f"{sheet.name}: COUNT MISMATCH, expected {result.rows_excel:,}, found {result.found:,}")
    return AssetCheckResult(
        asset_key=core_key(sheet),
        check_name=COUNT_RECONCILIATION,
        passed=result.passed,
        severity=AssetCheckSeverity.ERROR,
        description=(
            f"{sheet.name}: {result.rows_excel:,} Excel rows = {result.rows_in_core:,} in core "
            f"+ {result.rows_duplicate:,} duplicates + {result.rows_rejected:,} rejected"
            if result.passed
            else f"{sheet.name}: {result.likely_causes()}"
        ),
        metadata={
            "expected_rows_excel": result.rows_excel,
            "found": result.found,
            "difference": result.difference,
            "rows_in_core": result.rows_in_core,
            "rows_duplicate": result.rows_duplicate,
            "rows_rejected": result.rows_rejected,
            "sheet_status": result.status,
        },
    )


def _markdown_table(rows: list[dict]) -> str:
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join("" if r[h] is None else str(r[h]) for h in headers) + " |" for r in rows]
    return "\n".join(lines)


ingestion_assets = [workbook, snapshot]
