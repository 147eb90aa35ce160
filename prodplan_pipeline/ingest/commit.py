"""The workbook is one snapshot: its sheets' merges land in one transaction, or none does.

In that one transaction: every staged sheet is merged (derived values that come from the row
itself are written with it), the defects' times are derived from the merged phases and orders,
every sheet's count check is computed, and the cache version is bumped. A refused sheet (the
shrink guard), a failed count check or any error rolls the whole snapshot back: every core
table keeps the previous snapshot, and nothing downstream sees a mixture of the two.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field

import psycopg2

from prodplan_pipeline.contract import SHEETS, Sheet
from prodplan_pipeline.derived.backfill import backfill_defects
from prodplan_pipeline.ingest import runs
from prodplan_pipeline.ingest.merge import MergeCounts, ShrinkRefused, merge_sheet
from prodplan_pipeline.ingest.reconcile import Reconciliation, count_sheet, record
from prodplan_pipeline.warehouse import Warehouse
from prodplan_pipeline.warehouse.cache_version import bump_cache_version


@dataclass(frozen=True)
class MergeOutcome:
    sheet: str
    status: str  # merged | skipped_unchanged | refused | rolled_back
    counts: MergeCounts | None
    message: str | None = None


@dataclass
class SnapshotOutcome:
    committed: bool
    merged: dict[str, MergeOutcome] = field(default_factory=dict)
    reconciled: dict[str, Reconciliation] = field(default_factory=dict)
    message: str | None = None  # why the snapshot was not committed

    @property
    def rows_changed(self) -> int:
        return sum(o.counts.inserted + o.counts.updated + o.counts.deleted for o in self.merged.values() if o.counts)


class _NotCommitted(Exception):
    def __init__(self, message: str, sheet: str | None = None):
        super().__init__(message)
        self.sheet = sheet


class SnapshotCommit:
    """The snapshot's one transaction. Each sheet is merged as soon as it is staged (and the
    sheets it reads are merged), so the merges overlap the reading of the sheets still being
    staged; the defects' times, the count checks and the commit come in :meth:`finish`."""

    def __init__(self, warehouse: Warehouse, run_id: int, sheets: list[Sheet], max_shrink: float):
        self.warehouse, self.run_id, self.max_shrink = warehouse, run_id, max_shrink
        self.sheets = [s for s in SHEETS if s in sheets]  # the contract's order
        self.outcome = SnapshotOutcome(committed=False)
        self._staged: set[str] = set()
        self._refusal: Exception | None = None
        self._stack = contextlib.ExitStack()
        self._conn = self._stack.enter_context(warehouse.connect())

    def __enter__(self) -> SnapshotCommit:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()  # an exception rolls the transaction back

    def staged(self, sheet: Sheet) -> None:
        """``sheet`` is in staging (or was skipped as unchanged): merge what can be merged now."""
        self._staged.add(sheet.name)
        while self._refusal is None and (ready := self._next_ready()) is not None:
            try:
                _merge_one(self._conn, self.run_id, ready, self.max_shrink, self.outcome)
            except (ShrinkRefused, _NotCommitted) as refusal:
                self._refusal = refusal  # staging goes on: every sheet is still read and recorded

    def _next_ready(self) -> Sheet | None:
        names = {s.name for s in self.sheets}
        return next(
            (
                s
                for s in self.sheets
                if s.name in self._staged
                and s.name not in self.outcome.merged
                # a sheet whose merge reads others' merged rows waits for them (contract)
                and all(d in self.outcome.merged or d not in names for d in s.merges_after)
            ),
            None,
        )

    def finish(self) -> SnapshotOutcome:
        """Merge what is left, derive the defects' times, check every count, then commit; or
        roll the whole snapshot back and record why."""
        for sheet in self.sheets:  # a sheet that was never staged fails its merge, saying so
            self.staged(sheet)
        conn, outcome = self._conn, self.outcome
        try:
            if self._refusal is not None:
                raise self._refusal
            if any(o.status == "merged" for o in outcome.merged.values()):
                backfill_defects(conn, self.run_id)  # times whose phase or order changed since
            _check_all(conn, self.run_id, self.sheets, outcome)
        except (ShrinkRefused, _NotCommitted) as refusal:
            conn.rollback()
            _record_refusal(conn, self.run_id, self.sheets, outcome, refusal)
            conn.commit()
            return outcome
        runs.record_data_as_of(conn, self.run_id)  # the snapshot's own "now", committed with it
        if outcome.rows_changed:
            bump_cache_version(conn)  # API caches must not serve the previous snapshot
        conn.commit()
        outcome.committed = True
        refresh_statistics(
            self.warehouse,
            [s.core_table for s in self.sheets if (o := outcome.merged[s.name]).counts and o.counts.stale_statistics],
        )
        return outcome


def refresh_statistics(warehouse: Warehouse, tables: list[str]) -> None:
    """ANALYZE ``tables`` whole, after the commit, in a background thread on a connection of its
    own (~1.5 s for the phases' 73 partitions, off the ingestion's path); the merge analyzed
    their join columns already. Autovacuum would get there too, later (or, turned off, never)."""
    if not tables:
        return

    def analyze() -> None:
        try:
            with warehouse.connect() as conn:
                conn.autocommit = True
                with conn.cursor() as cur:
                    for table in tables:
                        cur.execute(f"ANALYZE {table}")
        except psycopg2.Error as error:  # the database went away: only statistics are lost
            logging.getLogger(__name__).warning("ANALYZE after the commit failed: %s", error)

    threading.Thread(target=analyze, name="analyze-after-commit", daemon=True).start()


def _merge_one(conn, run_id: int, sheet: Sheet, max_shrink: float, outcome: SnapshotOutcome) -> None:
    current = runs.sheet_run(conn, run_id, sheet.name)
    if current is None:
        raise LookupError(f"sheet '{sheet.name}' was not staged in ingestion run {run_id}")
    if current["status"] == "skipped_unchanged":
        outcome.merged[sheet.name] = MergeOutcome(sheet.name, "skipped_unchanged", None, current["message"])
        return
    _require_staged_rows(conn, sheet, current)
    counts = merge_sheet(conn, sheet, run_id, max_shrink)
    runs.record_merge(conn, run_id, sheet.name, "merged", None, counts)
    outcome.merged[sheet.name] = MergeOutcome(sheet.name, "merged", counts)


def _require_staged_rows(conn, sheet: Sheet, current: dict) -> None:
    """Staging is UNLOGGED: a server that restarted since the sheet was staged has emptied it.
    Merging an empty snapshot would delete core rows (or be refused): stop and say why."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {sheet.staging_table}")
        staged = cur.fetchone()[0]
    if staged != current["rows_excel"]:
        raise _NotCommitted(
            f"{sheet.staging_table} holds {staged:,} rows, not the {current['rows_excel']:,} read "
            "from the sheet (PostgreSQL restarted since staging? crash recovery empties UNLOGGED "
            "tables); nothing was committed: re-run the ingestion, which reads the sheet again",
            sheet.name,
        )


def _check_all(conn, run_id: int, sheets: list[Sheet], outcome: SnapshotOutcome) -> None:
    for sheet in sheets:
        outcome.reconciled[sheet.name] = count_sheet(conn, run_id, sheet)
    failed = [r for r in outcome.reconciled.values() if not r.passed]
    if failed:
        raise _NotCommitted(
            f"{failed[0].sheet} did not reconcile ({failed[0].rows_excel:,} Excel "
            f"rows, {failed[0].found:,} accounted for)",
            failed[0].sheet,
        )
    for sheet in sheets:
        record(conn, run_id, outcome.reconciled[sheet.name])


def _record_refusal(conn, run_id: int, sheets: list[Sheet], outcome: SnapshotOutcome, refusal: Exception) -> None:
    """After the rollback: the refused sheet says why, the others that the rollback undid say
    that nothing of this snapshot was committed, and every sheet's check fails or passes on
    what core holds now."""
    culprit = refusal.sheet.name if isinstance(refusal, ShrinkRefused) else refusal.sheet
    message = f"not committed: sheet {culprit} {_why(refusal)}, so core kept the previous snapshot"
    undone = [
        s.name
        for s in sheets
        if s.name != culprit and runs.sheet_run(conn, run_id, s.name)["status"] != "skipped_unchanged"
    ]
    if isinstance(refusal, ShrinkRefused):
        runs.record_merge(conn, run_id, culprit, "refused", str(refusal), MergeCounts(0, 0, 0, 0, 0, 0, 0.0))
    elif culprit:
        runs.mark_rolled_back(conn, run_id, [culprit], str(refusal))
    runs.mark_rolled_back(conn, run_id, undone, message)
    outcome.merged = {
        s.name: MergeOutcome(s.name, runs.sheet_run(conn, run_id, s.name)["status"], None, message) for s in sheets
    }
    outcome.reconciled = {}
    for sheet in sheets:
        outcome.reconciled[sheet.name] = count_sheet(conn, run_id, sheet)
        record(conn, run_id, outcome.reconciled[sheet.name])
    outcome.message = str(refusal)


def _why(refusal: Exception) -> str:
    if isinstance(refusal, ShrinkRefused):
        return f"was refused by the shrink guard ({refusal.to_delete / refusal.before:.1%} of its rows deleted)"
    return "could not be committed"
