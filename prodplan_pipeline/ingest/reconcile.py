"""Count reconciliation: every Excel row is a core row, a collapsed duplicate, or a reject.

The figures are counted independently of the merge's own bookkeeping: rows in core are counted
by joining core to this snapshot's staging rows (inside the snapshot's commit, before it lands),
rejects by counting ``quarantine.rejects``. An unchanged (skipped) sheet is counted from durable
facts, the last reconciled run's figures and the table's size, never from staging: staging is
UNLOGGED, and PostgreSQL's crash recovery empties it.
Failures are written to ``CRITICAL_MISMATCHES.md``; when a run reconciles fully, a stale report
is removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prodplan_pipeline.contract import SHEETS, Sheet
from prodplan_pipeline.ingest import runs
from prodplan_pipeline.ingest import statements as q
from prodplan_pipeline.warehouse import Warehouse

REPORT_NAME = "CRITICAL_MISMATCHES.md"
COUNT_REJECTS = "SELECT count(*) FROM quarantine.rejects WHERE run_id = %s AND sheet = %s"
RECORD = """UPDATE ops.ingestion_sheet_runs SET rows_in_core = %s, reconciled = %s, core_rows = %s
            WHERE run_id = %s AND sheet = %s"""
FINISH_RUN = """
    UPDATE ops.ingestion_runs r SET finished_at = clock_timestamp(),  -- now() would be the commit's start
        status = CASE WHEN bool_and_ok THEN 'succeeded' ELSE 'check_failed' END
    FROM (SELECT bool_and(reconciled) AS bool_and_ok, count(reconciled) AS checked
          FROM ops.ingestion_sheet_runs WHERE run_id = %(run_id)s) s
    WHERE r.run_id = %(run_id)s AND s.checked = %(sheets)s AND r.status = 'running'"""
LAST_RECONCILED = """
    SELECT run_id, rows_in_core, core_rows FROM ops.ingestion_sheet_runs
    WHERE sheet = %s AND run_id < %s AND reconciled AND status IN ('merged', 'skipped_unchanged')
    ORDER BY run_id DESC LIMIT 1"""
FAILED_SHEETS = """
    SELECT sheet, status, message, rows_excel, rows_in_core, rows_duplicate, rows_rejected
    FROM ops.ingestion_sheet_runs WHERE run_id = %s AND reconciled = false ORDER BY sheet"""


@dataclass(frozen=True)
class Reconciliation:
    sheet: str
    status: str
    rows_excel: int
    rows_in_core: int
    rows_duplicate: int
    rows_rejected: int
    message: str | None = None
    core_rows: int | None = None  # the core table's size when counted (durable, for later skips)

    @property
    def found(self) -> int:
        return self.rows_in_core + self.rows_duplicate + self.rows_rejected

    @property
    def difference(self) -> int:
        return self.rows_excel - self.found

    @property
    def passed(self) -> bool:
        return self.status not in ("refused", "rolled_back") and self.difference == 0

    def likely_causes(self) -> str:
        if self.status == "refused":
            return self.message or "the shrink guard refused the merge"
        if self.status == "rolled_back":
            return self.message or "another sheet of this snapshot was refused: nothing was committed"
        if self.difference > 0:
            return (
                "rows read from Excel are neither in core, nor counted as duplicates, nor "
                "rejected: a merge that did not complete, or core rows deleted or changed "
                "by another process after the merge"
            )
        if self.difference < 0:
            return (
                "more rows are accounted for than Excel holds: core keys that are not unique, "
                "or rejects recorded twice for this run"
            )
        return "none"


def count_sheet(conn, run_id: int, sheet: Sheet) -> Reconciliation:
    """The figures of the count check, in the caller's transaction (the snapshot's commit sees
    its own merge). A skipped sheet is counted from durable facts, never from staging."""
    run = runs.sheet_run(conn, run_id, sheet.name)
    if run is None:
        raise LookupError(f"sheet '{sheet.name}' has no record in ingestion run {run_id}")
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {sheet.core_table}")
        core_rows = cur.fetchone()[0]
        if run["status"] == "skipped_unchanged":
            in_core, message = _skipped_in_core(cur, run_id, sheet, core_rows)
        else:
            cur.execute(q.rows_in_core(sheet))
            in_core, message = cur.fetchone()[0], run["message"]
        cur.execute(COUNT_REJECTS, (run["staged_run_id"], sheet.name))
        rejected = cur.fetchone()[0]
    return Reconciliation(
        sheet.name, run["status"], run["rows_excel"], in_core, run["rows_duplicate"] or 0, rejected, message, core_rows
    )


def _skipped_in_core(cur, run_id: int, sheet: Sheet, now: int) -> tuple[int, str | None]:
    """An unchanged sheet's rows in core are those of the last reconciled run that holds the same
    content, provided the table still holds exactly as many rows as right after that run."""
    cur.execute(LAST_RECONCILED, (sheet.name, run_id))
    row = cur.fetchone()
    if row is None:
        return 0, "no earlier reconciled run of this sheet to compare with"
    previous_run, in_core, core_rows = row
    if core_rows is not None and now != core_rows:
        return now - core_rows + in_core, (
            f"{sheet.core_table} holds {now:,} rows, {core_rows:,} after run {previous_run}: "
            "changed outside an ingestion"
        )
    return in_core, f"content unchanged since run {previous_run}"


def record(conn, run_id: int, result: Reconciliation) -> None:
    with conn.cursor() as cur:
        cur.execute(RECORD, (result.rows_in_core, result.passed, result.core_rows, run_id, result.sheet))
        cur.execute(FINISH_RUN, {"run_id": run_id, "sheets": len(SHEETS)})


def write_mismatch_report(warehouse: Warehouse, run_id: int, reports: Path) -> Path | None:
    """Rewrite CRITICAL_MISMATCHES.md from the run's failed checks; remove it when none failed."""
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute(FAILED_SHEETS, (run_id,))
        failed = [
            Reconciliation(
                sheet=r[0],
                status=r[1],
                message=r[2],
                rows_excel=r[3] or 0,
                rows_in_core=r[4] or 0,
                rows_duplicate=r[5] or 0,
                rows_rejected=r[6] or 0,
            )
            for r in cur.fetchall()
        ]
    path = reports / REPORT_NAME
    if not failed:
        path.unlink(missing_ok=True)
        return None
    reports.mkdir(parents=True, exist_ok=True)
    path.write_text(_report(run_id, failed), encoding="utf-8")
    return path


def _report(run_id: int, failed: list[Reconciliation]) -> str:
    lines = [
        "# CRITICAL MISMATCHES",
        "",
        f"Ingestion run {run_id} did not reconcile: for the sheets below, the rows read from Excel "
        "are not all accounted for as core rows, collapsed duplicates or rejects. Nothing "
        "downstream was refreshed from this run.",
        "",
        "| sheet | expected (Excel rows) | found | difference | in core | duplicates | rejected |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in failed:
        lines.append(
            f"| {r.sheet} | {r.rows_excel:,} | {r.found:,} | {r.difference:+,} | "
            f"{r.rows_in_core:,} | {r.rows_duplicate:,} | {r.rows_rejected:,} |"
        )
    lines += ["", "## Likely causes", ""]
    lines += [f"- **{r.sheet}**: {r.likely_causes()}" for r in failed]
    return "\n".join(lines) + "\n"
