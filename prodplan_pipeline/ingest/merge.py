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
from prodplan_pipeline.warehouse.monthly_partitions import ensure_partitions

DEFAULT_MAX_SHRINK = 0.20


class ShrinkRefused(RuntimeError):
    def __init__(self, sheet: Sheet, before: int, to_delete: int, max_shrink: float):
        self.sheet, self.before, self.to_delete, self.max_shrink = sheet, before, to_delete, max_shrink
        super().__init__(
            f"sheet '{sheet.name}': the new snapshot would delete {to_delete:,} of the "
            f"{before:,} rows in {sheet.core_table} ({to_delete / before:.1%}, more than the "
            f"{max_shrink:.0%} allowed); no sheet of this snapshot was merged. If the rows were "
            f"really removed in the ERP, re-run with a higher limit: `prodplan ingest "
            f"--max-shrink {_suggested_limit(to_delete / before)}` (or PRODPLAN_MAX_SHRINK)."
        )


def _suggested_limit(share: float) -> str:
    """The smallest limit, in hundredths, that lets this deletion through."""
    return f"{min(1.0, (int(share * 100) + 1) / 100):.2f}"


@dataclass(frozen=True)
class MergeCounts:
    inserted: int
    updated: int
    unchanged: int
    deleted: int
    duplicate: int
    rejected_duplicate_key: int
    seconds: float
    stale_statistics: bool = False  # changed enough that the table wants a full ANALYZE


def merge_sheet(conn, sheet: Sheet, run_id: int, max_shrink: float = DEFAULT_MAX_SHRINK) -> MergeCounts:
    """Merge ``sheet``'s staging rows into core within the caller's transaction (not committed)."""
    started = time.perf_counter()
    params = {"run_id": run_id, "sheet": sheet.name}
    with conn.cursor() as cur:
        cur.execute("SET LOCAL work_mem = '64MB'")  # one-batch hash joins for the big sheets
        duplicate, rejected = _collapse_duplicates(cur, sheet, params) if sheet.key else (0, 0)
        cur.execute(q.snapshot(sheet))
        protected = sheet.key is not None and _protect_rejected_keys(cur, sheet)
        cur.execute(f"SELECT EXISTS (SELECT 1 FROM {sheet.core_table})")
        first_load = not cur.fetchone()[0]
        if not first_load:
            cur.execute(q.diff(sheet, protected))
            cur.execute("ANALYZE diff")  # its size decides between index lookups and hash joins
        else:  # a first load: every row is new, no join needed
            cur.execute(q.first_load_diff(sheet))
        counts = _diff_counts(cur)
        _shrink_guard(cur, sheet, max_shrink, counts["delete"])
        _ensure_partitions(cur, sheet)
        deleted = _execute(cur, q.apply_deletes(sheet))
        updated = _execute(cur, q.apply_updates(sheet))
        inserted = _execute(cur, q.apply_inserts(sheet))
        for statement in q.record_days(sheet, first_load):
            cur.execute(statement, params)
        if protected:
            cur.execute(q.note_kept_rows(sheet), params)
        cur.execute(f"SELECT count(*) FROM {q.valid_rows(sheet)}")
        kept = cur.fetchone()[0]
        stale = inserted + updated + deleted > max(500, kept // 10)
        if stale:
            # The join columns' statistics now, for the statements left in this commit (a defect's
            # time joins the phases by id); the whole table's after the commit (see commit.py):
            # all columns of the 73 phase partitions take ~1.5 s.
            cur.execute(f"ANALYZE {sheet.core_table} ({q.cols(q.join_columns(sheet))})")
        _drop_temporaries(cur)  # the next sheet of the same commit creates its own
    if (inserted, updated, deleted) != (counts["insert"], counts["update"], counts["delete"]):
        raise RuntimeError(
            f"{sheet.core_table}: applied {inserted}/{updated}/{deleted} rows for a diff of {counts}; rolled back"
        )  # a concurrent writer, never silent
    return MergeCounts(
        inserted=inserted,
        updated=updated,
        unchanged=kept - inserted - updated,
        deleted=deleted,
        duplicate=duplicate,
        rejected_duplicate_key=rejected,
        seconds=time.perf_counter() - started,
        stale_statistics=stale,
    )


TEMPORARIES = """
    SELECT relname, relkind FROM pg_class
    WHERE relnamespace = pg_my_temp_schema() AND relname IN ('diff', 'protected', 'dup', 'snap')"""


def _drop_temporaries(cur) -> None:
    cur.execute(TEMPORARIES)
    kinds = dict(cur.fetchall())
    for name in ("diff", "protected", "dup", "snap"):  # dependents first (diff may read snap)
        if name in kinds:
            cur.execute(f"DROP {'VIEW' if kinds[name] == 'v' else 'TABLE'} IF EXISTS {name} CASCADE")


def _execute(cur, statement: str) -> int:
    cur.execute(statement)
    return cur.rowcount


def _diff_counts(cur) -> dict[str, int]:
    cur.execute("SELECT action, count(*) FROM diff GROUP BY action")
    return {"insert": 0, "update": 0, "delete": 0, **dict(cur.fetchall())}


def _collapse_duplicates(cur, sheet: Sheet, params: dict) -> tuple[int, int]:
    """Exact copies of a kept row are dropped and counted; other rows sharing its key rejected."""
    cur.execute(q.key_duplicates(sheet))
    if cur.rowcount == 0:
        return 0, 0
    cur.execute(q.reject_key_duplicates(sheet), params)
    rejected = cur.rowcount
    cur.execute("SELECT count(*) FROM dup WHERE excel_row <> kept_row AND first_same = kept_row")
    duplicate = cur.fetchone()[0]
    cur.execute(q.mark_duplicates(sheet))
    return duplicate, rejected


def _protect_rejected_keys(cur, sheet: Sheet) -> bool:
    """Keys seen only in rejected rows keep their core rows; False when there are none."""
    cur.execute(f"SELECT EXISTS (SELECT 1 FROM {sheet.staging_table} WHERE rejected)")
    if not cur.fetchone()[0]:
        return False
    cur.execute(q.protected_keys(sheet))
    return True


def _shrink_guard(cur, sheet: Sheet, max_shrink: float, to_delete: int) -> None:
    if not to_delete:
        return
    cur.execute(f"SELECT count(*) FROM {sheet.core_table}")
    before = cur.fetchone()[0]
    if to_delete > max_shrink * before:
        raise ShrinkRefused(sheet, before, to_delete, max_shrink)


def _ensure_partitions(cur, sheet: Sheet) -> None:
    if sheet.partition_key:  # the phases' monthly partitions, made before their rows arrive
        key = q.ident(sheet.partition_key)
        cur.execute(f"SELECT min({key})::date, max({key})::date FROM diff WHERE action <> 'delete'")
        ensure_partitions(cur.connection, *cur.fetchone())
