"""Count reconciliation: every Excel row is a core row, a collapsed duplicate, or a reject.

The figures are counted independently of the merge's own bookkeeping: rows in core are counted
by joining core to this snapshot's staging rows, rejects by counting ``quarantine.rejects``.
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
RECORD = """UPDATE ops.ingestion_sheet_runs SET rows_in_core = %s, reconciled = %s
            WHERE run_id = %s AND sheet = %s"""
FINISH_RUN = """
    UPDATE ops.ingestion_runs r SET finished_at = now(),
        status = CASE WHEN bool_and_ok THEN 'succeeded' ELSE 'check_failed' END
    FROM (SELECT bool_and(reconciled) AS bool_and_ok, count(reconciled) AS checked
          FROM ops.ingestion_sheet_runs WHERE run_id = %(run_id)s) s
    WHERE r.run_id = %(run_id)s AND s.checked = %(sheets)s AND r.status = 'running'"""
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

    @property
    def found(self) -> int:
        return self.rows_in_core + self.rows_duplicate + self.rows_rejected

    @property
    def difference(self) -> int:
        return self.rows_excel - self.found

    @property
    def passed(self) -> bool:
        return self.status != "refused" and self.difference == 0

    def likely_causes(self) -> str:
        if self.status == "refused":
            return self.message or "the shrink guard refused the merge"
        if self.difference > 0:
            return ("rows read from Excel are neither in core, nor counted as duplicates, nor "
                    "rejected: a merge that did not complete, or core rows deleted or changed "
                    "by another process after the merge")
        if self.difference < 0:
            return ("more rows are accounted for than Excel holds: core keys that are not unique, "
                    "or rejects recorded twice for this run")
        return "none"


def reconcile(warehouse: Warehouse, run_id: int, sheet: Sheet) -> Reconciliation:
    """Count, record the outcome on the sheet run, and close the run once every sheet is checked."""
    with warehouse.connect() as conn:
        run = runs.sheet_run(conn, run_id, sheet.name)
        if run is None:
            raise LookupError(f"sheet '{sheet.name}' has no record in ingestion run {run_id}")
        with conn.cursor() as cur:
            cur.execute(q.rows_in_core(sheet))
            in_core = cur.fetchone()[0]
            cur.execute(COUNT_REJECTS, (run["staged_run_id"], sheet.name))
            rejected = cur.fetchone()[0]
        result = Reconciliation(sheet.name, run["status"], run["rows_excel"], in_core,
                                run["rows_duplicate"] or 0, rejected, run["message"])
        with conn.cursor() as cur:
            cur.execute(RECORD, (in_core, result.passed, run_id, sheet.name))
            cur.execute(FINISH_RUN, {"run_id": run_id, "sheets": len(SHEETS)})
    return result


def write_mismatch_report(warehouse: Warehouse, run_id: int, reports: Path) -> Path | None:
    """Rewrite CRITICAL_MISMATCHES.md from the run's failed checks; remove it when none failed."""
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute(FAILED_SHEETS, (run_id,))
        failed = [Reconciliation(sheet=r[0], status=r[1], message=r[2], rows_excel=r[3] or 0,
                                 rows_in_core=r[4] or 0, rows_duplicate=r[5] or 0,
                                 rows_rejected=r[6] or 0) for r in cur.fetchall()]
    path = reports / REPORT_NAME
    if not failed:
        path.unlink(missing_ok=True)
        return None
    reports.mkdir(parents=True, exist_ok=True)
    path.write_text(_report(run_id, failed), encoding="utf-8")
    return path


def _report(run_id: int, failed: list[Reconciliation]) -> str:
    lines = [
        "# CRITICAL MISMATCHES", "",
        f"Ingestion run {run_id} did not reconcile: for the sheets below, the rows read from Excel "
        "are not all accounted for as core rows, collapsed duplicates or rejects. Nothing "
        "downstream was refreshed from this run.", "",
        "| sheet | expected (Excel rows) | found | difference | in core | duplicates | rejected |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in failed:
        lines.append(f"| {r.sheet} | {r.rows_excel:,} | {r.found:,} | {r.difference:+,} | "
                     f"{r.rows_in_core:,} | {r.rows_duplicate:,} | {r.rows_rejected:,} |")
    lines += ["", "## Likely causes", ""]
    lines += [f"- **{r.sheet}**: {r.likely_causes()}" for r in failed]
    return "\n".join(lines) + "\n"
