"""The workbook is one snapshot: its sheets' merges land in one transaction, or none does.

In that one transaction: every staged sheet is merged (derived values that come from the row
itself are written with it), the defects' times are derived from the merged phases and orders,
every sheet's count check is computed, and the cache version is bumped. A refused sheet (the
shrink guard), a failed count check or any error rolls the whole snapshot back: every core
table keeps the previous snapshot, and nothing downstream sees a mixture of the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prodplan_pipeline.analytics.aggregates import bump_cache_version
from prodplan_pipeline.contract import SHEETS, Sheet
from prodplan_pipeline.derived.backfill import backfill_defects
from prodplan_pipeline.ingest import runs
from prodplan_pipeline.ingest.merge import DEFAULT_MAX_SHRINK, MergeCounts, ShrinkRefused, merge_sheet
from prodplan_pipeline.ingest.reconcile import Reconciliation, count_sheet, record
from prodplan_pipeline.warehouse import Warehouse

# Sheets whose rows a derived value of another sheet reads come first (a defect's day and time
# come from its inspection phase row and its order).
MERGED_LAST = ("OrdemFabricoErros",)


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
        return sum(o.counts.inserted + o.counts.updated + o.counts.deleted
                   for o in self.merged.values() if o.counts)


class _NotCommitted(Exception):
    def __init__(self, message: str, sheet: str | None = None):
        super().__init__(message)
        self.sheet = sheet


def commit_snapshot(warehouse: Warehouse, run_id: int, sheets: list[Sheet] | None = None,
                    max_shrink: float = DEFAULT_MAX_SHRINK) -> SnapshotOutcome:
    """Merge, derive and reconcile every sheet of the snapshot in one transaction."""
    sheets = _merge_order(sheets or list(SHEETS))
    outcome = SnapshotOutcome(committed=False)
    with warehouse.connect() as conn:
        try:
            _merge_all(conn, run_id, sheets, max_shrink, outcome)
            _check_all(conn, run_id, sheets, outcome)
        except (ShrinkRefused, _NotCommitted) as refusal:
            conn.rollback()
            _record_refusal(conn, run_id, sheets, outcome, refusal)
            return outcome
        if outcome.rows_changed:
            bump_cache_version(conn)  # API caches must not serve the previous snapshot
    outcome.committed = True
    return outcome


def _merge_order(sheets: list[Sheet]) -> list[Sheet]:
    return sorted(sheets, key=lambda s: s.name in MERGED_LAST)


def _merge_all(conn, run_id: int, sheets: list[Sheet], max_shrink: float,
               outcome: SnapshotOutcome) -> None:
    for sheet in sheets:
        current = runs.sheet_run(conn, run_id, sheet.name)
        if current is None:
            raise LookupError(f"sheet '{sheet.name}' was not staged in ingestion run {run_id}")
        if current["status"] == "skipped_unchanged":
            outcome.merged[sheet.name] = MergeOutcome(sheet.name, "skipped_unchanged", None,
                                                      current["message"])
            continue
        _require_staged_rows(conn, sheet, current)
        counts = merge_sheet(conn, sheet, run_id, max_shrink)
        runs.record_merge(conn, run_id, sheet.name, "merged", None, counts)
        outcome.merged[sheet.name] = MergeOutcome(sheet.name, "merged", counts)
    if any(o.status == "merged" for o in outcome.merged.values()):
        backfill_defects(conn, run_id)  # a cross-table value: joins this same commit


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
            sheet.name)


def _check_all(conn, run_id: int, sheets: list[Sheet], outcome: SnapshotOutcome) -> None:
    for sheet in sheets:
        outcome.reconciled[sheet.name] = count_sheet(conn, run_id, sheet)
    failed = [r for r in outcome.reconciled.values() if not r.passed]
    if failed:
        raise _NotCommitted(f"{failed[0].sheet} did not reconcile ({failed[0].rows_excel:,} Excel "
                            f"rows, {failed[0].found:,} accounted for)", failed[0].sheet)
    for sheet in sheets:
        record(conn, run_id, outcome.reconciled[sheet.name])


def _record_refusal(conn, run_id: int, sheets: list[Sheet], outcome: SnapshotOutcome,
                    refusal: Exception) -> None:
    """After the rollback: the refused sheet says why, the others that the rollback undid say
    that nothing of this snapshot was committed, and every sheet's check fails or passes on
    what core holds now."""
    culprit = refusal.sheet.name if isinstance(refusal, ShrinkRefused) else refusal.sheet
    message = f"not committed: sheet {culprit} {_why(refusal)}, so core kept the previous snapshot"
    undone = [s.name for s in sheets if s.name != culprit
              and runs.sheet_run(conn, run_id, s.name)["status"] != "skipped_unchanged"]
    if isinstance(refusal, ShrinkRefused):
        runs.record_merge(conn, run_id, culprit, "refused", str(refusal), MergeCounts(0, 0, 0, 0, 0, 0, 0.0))
    elif culprit:
        runs.mark_rolled_back(conn, run_id, [culprit], str(refusal))
    runs.mark_rolled_back(conn, run_id, undone, message)
    outcome.merged = {s.name: MergeOutcome(s.name, runs.sheet_run(conn, run_id, s.name)["status"],
                                           None, message) for s in sheets}
    outcome.reconciled = {}
    for sheet in sheets:
        outcome.reconciled[sheet.name] = count_sheet(conn, run_id, sheet)
        record(conn, run_id, outcome.reconciled[sheet.name])
    outcome.message = str(refusal)


def _why(refusal: Exception) -> str:
    if isinstance(refusal, ShrinkRefused):
        return f"was refused by the shrink guard ({refusal.to_delete / refusal.before:.1%} of its rows deleted)"
    return "could not be committed"
