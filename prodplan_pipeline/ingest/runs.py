"""Bookkeeping of ingestion runs and sheet runs in ``ops`` (what ran, on what, with what result)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from prodplan_pipeline.contract import plausible
from prodplan_pipeline.warehouse.connection import fetch_dicts
from prodplan_pipeline.workbook.inspect import WorkbookInfo

START_RUN = """
    INSERT INTO ops.ingestion_runs (dagster_run_id, workbook_path, workbook_sha256, forced)
    VALUES (%s, %s, %s, %s)
    ON CONFLICT (dagster_run_id) DO UPDATE SET dagster_run_id = EXCLUDED.dagster_run_id
    RETURNING run_id"""
# Runs left 'running' by a process that died: called under the ingestion lock, so no other
# ingestion can be running at that moment.
CLOSE_INTERRUPTED = """
    UPDATE ops.ingestion_runs SET status = 'interrupted', finished_at = now(),
        message = 'interrupted: the process stopped before the run finished; nothing of it '
                  'was committed unless its sheets say merged'
    WHERE status = 'running' AND run_id IS DISTINCT FROM %s
    RETURNING run_id, dagster_run_id, started_at"""
# The content core holds for a sheet: the last run whose sheet landed and reconciled (a refused
# or rolled-back snapshot left core as it was, so it does not count).
LAST_SHEET_RUN = """
    SELECT status, sheet_sha256, staged_run_id, rows_excel, rows_duplicate, rows_rejected
    FROM ops.ingestion_sheet_runs
    WHERE sheet = %s AND run_id < %s AND reconciled AND status IN ('merged', 'skipped_unchanged')
    ORDER BY run_id DESC LIMIT 1"""
MARK_ROLLED_BACK = """
    UPDATE ops.ingestion_sheet_runs SET status = 'rolled_back', message = %(message)s,
        rows_in_core = NULL, reconciled = false
    WHERE run_id = %(run_id)s AND sheet = ANY(%(sheets)s)"""
UPSERT_SHEET_RUN = """
    INSERT INTO ops.ingestion_sheet_runs AS r
        (run_id, sheet, sheet_sha256, status, staged_run_id, message, rows_excel, rows_duplicate,
         rows_rejected, seconds)
    VALUES (%(run_id)s, %(sheet)s, %(sha)s, %(status)s, %(staged_run_id)s, %(message)s,
            %(rows_excel)s, %(rows_duplicate)s, %(rows_rejected)s, %(seconds)s)
    ON CONFLICT (run_id, sheet) DO UPDATE SET sheet_sha256 = EXCLUDED.sheet_sha256,
        status = EXCLUDED.status, staged_run_id = EXCLUDED.staged_run_id,
        message = EXCLUDED.message, rows_excel = EXCLUDED.rows_excel,
        rows_duplicate = EXCLUDED.rows_duplicate, rows_rejected = EXCLUDED.rows_rejected,
        seconds = EXCLUDED.seconds, rows_inserted = NULL, rows_updated = NULL,
        rows_unchanged = NULL, rows_deleted = NULL, rows_in_core = NULL, reconciled = NULL"""
RECORD_MERGE = """
    UPDATE ops.ingestion_sheet_runs SET status = %(status)s, message = %(message)s,
        rows_inserted = %(inserted)s, rows_updated = %(updated)s, rows_unchanged = %(unchanged)s,
        rows_deleted = %(deleted)s, rows_duplicate = %(duplicate)s,
        rows_rejected = rows_rejected + %(rejected_duplicate_key)s,
        seconds = coalesce(seconds, 0) + %(seconds)s
    WHERE run_id = %(run_id)s AND sheet = %(sheet)s"""
SHEET_RUN = "SELECT * FROM ops.ingestion_sheet_runs WHERE run_id = %s AND sheet = %s"


@dataclass(frozen=True)
class PreviousSheetRun:
    status: str
    sheet_sha256: str
    staged_run_id: int
    rows_excel: int
    rows_duplicate: int
    rows_rejected: int

    @property
    def merged(self) -> bool:
        return self.status in ("merged", "skipped_unchanged")


def start_run(conn, dagster_run_id: str, workbook: WorkbookInfo, forced: bool) -> int:
    """Register the run (call under the ingestion lock; runs it finds 'running' are closed)."""
    with conn.cursor() as cur:
        cur.execute(START_RUN, (dagster_run_id, str(workbook.shown_path), workbook.sha256, forced))
        run_id = cur.fetchone()[0]
    close_interrupted(conn, run_id)
    return run_id


def close_interrupted(conn, keep: int | None = None) -> list[tuple]:
    """Close every 'running' run but ``keep``: (run_id, dagster_run_id, started_at) of each."""
    with conn.cursor() as cur:
        cur.execute(CLOSE_INTERRUPTED, (keep,))
        return cur.fetchall()


def run_id_for(conn, dagster_run_id: str) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT run_id FROM ops.ingestion_runs WHERE dagster_run_id = %s", (dagster_run_id,))
        row = cur.fetchone()
    if row is None:
        raise LookupError(f"no ingestion run registered for Dagster run {dagster_run_id}")
    return row[0]


LAST_INGESTED = """
    SELECT run_id, workbook_sha256 FROM ops.ingestion_runs
    WHERE status = 'succeeded' ORDER BY run_id DESC LIMIT 1"""


def last_ingested(conn) -> tuple[int, str] | None:
    """(run_id, workbook SHA-256) of the last successful ingestion, whoever launched it."""
    with conn.cursor() as cur:
        cur.execute(LAST_INGESTED)
        return cur.fetchone()


def workbook_sha256(conn, dagster_run_id: str) -> str:
    with conn.cursor() as cur:
        cur.execute("SELECT workbook_sha256 FROM ops.ingestion_runs WHERE dagster_run_id = %s", (dagster_run_id,))
        return cur.fetchone()[0]


def previous_sheet_run(conn, sheet: str, run_id: int) -> PreviousSheetRun | None:
    with conn.cursor() as cur:
        cur.execute(LAST_SHEET_RUN, (sheet, run_id))
        row = cur.fetchone()
    return PreviousSheetRun(*row) if row else None


def record_sheet_run(conn, **values) -> None:
    with conn.cursor() as cur:
        cur.execute(UPSERT_SHEET_RUN, values)


def record_merge(conn, run_id: int, sheet: str, status: str, message: str | None, counts) -> None:
    with conn.cursor() as cur:
        cur.execute(
            RECORD_MERGE, {"run_id": run_id, "sheet": sheet, "status": status, "message": message, **asdict(counts)}
        )


def mark_rolled_back(conn, run_id: int, sheets: list[str], message: str) -> None:
    with conn.cursor() as cur:
        cur.execute(MARK_ROLLED_BACK, {"run_id": run_id, "sheets": sheets, "message": message})


def sheet_run(conn, run_id: int, sheet: str) -> dict | None:
    with conn.cursor() as cur:
        rows = fetch_dicts(cur, SHEET_RUN, (run_id, sheet))
        return rows[0] if rows else None


SHEET_SUMMARY = """
    SELECT sheet, status, rows_excel, rows_inserted, rows_updated, rows_unchanged, rows_deleted,
           rows_duplicate, rows_rejected, rows_in_core, reconciled, seconds
    FROM ops.ingestion_sheet_runs WHERE run_id = %s
    ORDER BY array_position(%s::text[], sheet)"""
CLOSE_FAILED_RUN = """
    UPDATE ops.ingestion_runs SET status = %s, finished_at = coalesce(finished_at, now()),
           message = coalesce(message, %s)
    WHERE run_id = %s AND status = 'running'"""


def sheet_summaries(conn, run_id: int, order: list[str]) -> list[dict]:
    """What the run did to each sheet, in the contract's order."""
    with conn.cursor() as cur:
        return fetch_dicts(cur, SHEET_SUMMARY, (run_id, order))


def close_failed_run(conn, run_id: int, status: str, message: str | None) -> None:
    """A run that failed or was stopped by a check is closed with its reason (once)."""
    with conn.cursor() as cur:
        cur.execute(CLOSE_FAILED_RUN, (status, message, run_id))


# The newest plausible phase start or end in core: the snapshot's "now", which the current
# analytics layers are measured as of (never the clock: re-serving an old export gives the
# same numbers).
DATA_AS_OF = f"""
    SELECT greatest(max(fase_of_inicio) FILTER (WHERE {plausible("fase_of_inicio")}),
                    max(fase_of_fim) FILTER (WHERE {plausible("fase_of_fim")}))
    FROM core.fases_ordem_fabrico"""
RECORD_DATA_AS_OF = f"UPDATE ops.ingestion_runs SET data_as_of = ({DATA_AS_OF}) WHERE run_id = %(run_id)s"


def record_data_as_of(conn, run_id: int) -> None:
    """Record the snapshot's data_as_of on the run that commits it (the caller's transaction)."""
    with conn.cursor() as cur:
        cur.execute(RECORD_DATA_AS_OF, {"run_id": run_id})
