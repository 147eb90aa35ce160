"""The whole ingestion without Dagster: the same steps the assets run, for benchmarks and tests
that measure or exercise the data path alone (Dagster adds ~2-3 s of its own per run)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prodplan_pipeline.contract import SHEETS
from prodplan_pipeline.ingest import runs, steps
from prodplan_pipeline.ingest.commit import MergeOutcome, SnapshotCommit
from prodplan_pipeline.ingest.reconcile import Reconciliation
from prodplan_pipeline.warehouse import Warehouse
from prodplan_pipeline.warehouse.locks import INGESTION_LOCK, advisory_lock
from prodplan_pipeline.workbook.inspect import DEFAULT_MAX_UNCOMPRESSED, WorkbookError, inspect_workbook


@dataclass
class IngestionResult:
    run_id: int
    staged: dict[str, steps.StageOutcome] = field(default_factory=dict)
    merged: dict[str, MergeOutcome] = field(default_factory=dict)
    reconciled: dict[str, Reconciliation] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return len(self.reconciled) == len(SHEETS) and all(r.passed for r in self.reconciled.values())


def ingest_workbook(
    warehouse: Warehouse,
    path: str | Path,
    force: bool = False,
    max_shrink: float = 0.20,
    on_stage: Callable[[str], None] | None = None,
    max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED,
) -> IngestionResult:
    """Stage every sheet, merging each as soon as it is staged, and reconcile them all in one
    commit; under the ingestion lock."""
    workbook = inspect_workbook(path, max_uncompressed)
    with warehouse.connect() as lock_conn, advisory_lock(lock_conn, INGESTION_LOCK):
        with warehouse.connect() as conn:
            result = IngestionResult(runs.start_run(conn, f"plain-{uuid.uuid4()}", workbook, force))
        _note(on_stage, "stage")
        with SnapshotCommit(warehouse, result.run_id, list(SHEETS), max_shrink) as commit:
            for sheet, outcome in steps.stage_all(warehouse, result.run_id, workbook, list(SHEETS), force):
                if isinstance(outcome, WorkbookError):
                    raise outcome  # the snapshot's transaction is rolled back
                result.staged[sheet.name] = outcome
                commit.staged(sheet)  # merged while the other sheets are read
            _note(on_stage, "commit")
            snapshot = commit.finish()
        result.merged, result.reconciled = snapshot.merged, snapshot.reconciled
    return result


def _note(callback: Callable[[str], None] | None, stage: str) -> None:
    if callback is not None:
        callback(stage)
