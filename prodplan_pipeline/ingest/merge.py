"""Merge a staged sheet into its core table, in one transaction.

New keys are inserted, changed rows updated (identical rows are not rewritten), keys gone from
the snapshot deleted, exact duplicate rows collapsed and counted, rows that share a key but
differ rejected. The workbook is a full snapshot, so a sheet that suddenly lost more than
``max_shrink`` of its rows is far more likely a broken export than a real deletion: the merge is
refused and nothing in core changes (the shrink guard).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from prodplan_pipeline.contract import Sheet
from prodplan_pipeline.ingest import statements as q
from prodplan_pipeline.warehouse.partitions import ensure_partitions

DEFAULT_MAX_SHRINK = 0.20


class ShrinkRefused(RuntimeError):
    def __init__(self, sheet: Sheet, before: int, to_delete: int, max_shrink: float):
        self.sheet, self.before, self.to_delete, self.max_shrink = sheet, before, to_delete, max_shrink
        super().__init__(
            f"sheet '{sheet.name}': the new snapshot would delete {to_delete:,} of the "
            f"{before:,} rows in {sheet.core_table} ({to_delete / before:.1%}, more than the "
            f"{max_shrink:.0%} allowed); nothing was merged. If the rows were really removed in "
            f"the ERP, re-run with a higher shrink limit."
        )


@dataclass(frozen=True)
class MergeCounts:
    inserted: int
    updated: int
    unchanged: int
    deleted: int
    duplicate: int
    rejected_duplicate_key: int
    seconds: float


def merge_sheet(conn, sheet: Sheet, run_id: int, max_shrink: float = DEFAULT_MAX_SHRINK) -> MergeCounts:
    """Merge ``sheet``'s staging rows into core within the caller's transaction (not committed)."""
    started = time.perf_counter()
    params = {"run_id": run_id, "sheet": sheet.name}
    with conn.cursor() as cur:
        cur.execute("SET LOCAL work_mem = '64MB'")  # one-batch hash joins for the big sheets
        cur.execute(q.snapshot(sheet))
        cur.execute("ANALYZE snap")
        duplicate, rejected = _collapse_duplicates(cur, sheet, params) if sheet.key else (0, 0)
        protected = sheet.key is not None and _protect_rejected_keys(cur, sheet)
        _shrink_guard(cur, sheet, max_shrink, protected)
        _ensure_partitions(cur, sheet)
        if q.defers_days(sheet):
            cur.execute(q.DEFECT_CHANGES)
        # Deletes first (fewer rows to join afterwards), then updates, then inserts.
        deleted = _count(cur, q.delete_gone(sheet, protected), params)
        updated = _count(cur, q.update_changed(sheet), params) if sheet.key is not None else 0
        inserted = _count(cur, q.insert_new(sheet), params)
        if protected:
            cur.execute(q.note_kept_rows(sheet), params)
        if q.defers_days(sheet):
            cur.execute("ANALYZE defect_changes")
            cur.execute(q.RECORD_DEFECT_DAYS, params)
        cur.execute("SELECT count(*) FROM snap")
        kept = cur.fetchone()[0]
    return MergeCounts(inserted=inserted, updated=updated, unchanged=kept - inserted - updated,
                       deleted=deleted, duplicate=duplicate, rejected_duplicate_key=rejected,
                       seconds=time.perf_counter() - started)


def _count(cur, statement: str, params: dict) -> int:
    cur.execute(statement, params)
    return cur.fetchone()[0]


def _collapse_duplicates(cur, sheet: Sheet, params: dict) -> tuple[int, int]:
    """Exact copies of a kept row are dropped and counted; other rows sharing its key rejected."""
    cur.execute(q.key_duplicates(sheet))
    if cur.rowcount == 0:
        return 0, 0
    cur.execute(q.reject_key_duplicates(sheet), params)
    rejected = cur.rowcount
    cur.execute("SELECT count(*) FROM dup WHERE excel_row <> kept_row AND first_same = kept_row")
    duplicate = cur.fetchone()[0]
    cur.execute("DELETE FROM snap WHERE excel_row IN "
                "(SELECT excel_row FROM dup WHERE excel_row <> kept_row)")
    return duplicate, rejected


def _protect_rejected_keys(cur, sheet: Sheet) -> bool:
    """Keys seen only in rejected rows keep their core rows; False when there are none."""
    cur.execute(f"SELECT EXISTS (SELECT 1 FROM {sheet.staging_table} WHERE rejected)")
    if not cur.fetchone()[0]:
        return False
    cur.execute(q.protected_keys(sheet))
    return True


def _shrink_guard(cur, sheet: Sheet, max_shrink: float, protected: bool) -> None:
    cur.execute(q.shrink_figures(sheet, protected))
    before, to_delete = cur.fetchone()
    if before and to_delete > max_shrink * before:
        raise ShrinkRefused(sheet, before, to_delete, max_shrink)


def _ensure_partitions(cur, sheet: Sheet) -> None:
    if "event_time" in q.MERGE_COMPUTED.get(sheet.table, {}):
        cur.execute("SELECT min(event_time)::date, max(event_time)::date FROM snap")
        ensure_partitions(cur.connection, *cur.fetchone())
