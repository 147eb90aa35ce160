"""Whether a workbook is the snapshot the warehouse already reflects, in every layer.

Then `prodplan ingest` has nothing to do: it answers from a few queries (~0.5 s) instead of
starting Dagster (~6 s of imports, run bookkeeping and checks that would all find nothing new).
Any layer behind the snapshot (a killed run, a failed check step, a report deleted, a pending
day) sends the command the whole way, which repairs it.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from prodplan_pipeline import watermarks
from prodplan_pipeline.analytics.convergence import daily_window, lagging_layers, pending_days
from prodplan_pipeline.contract import SHEETS
from prodplan_pipeline.ingest import runs
from prodplan_pipeline.quality.dictionary import REPORT_NAME as DICTIONARY_REPORT
from prodplan_pipeline.quality.expectations import needs_validation
from prodplan_pipeline.quality.gates import REPORT_NAME as GATES_REPORT

# The layers after the commit that keep a watermark of the snapshot they reflect.
QUALITY_LAYERS = ("data_quality_issues", "feature_gates", "data_dictionary")
UNFINISHED_RUNS = "SELECT EXISTS (SELECT 1 FROM ops.ingestion_runs WHERE status = 'running')"


def reflected_run(conn, sha256: str, reports: Path, partitions_start: date) -> int | None:
    """The ingestion run whose snapshot is this workbook (by SHA-256) when every layer reflects
    it, else None. Call under the ingestion lock (a 'running' run is then an interrupted one)."""
    last = runs.last_ingested(conn)
    if last is None or last[1] != sha256 or _unfinished(conn):
        return None
    change = watermarks.last_core_change(conn)
    if any(watermarks.read(conn, layer) != str(change) for layer in QUALITY_LAYERS):
        return None
    if any(needs_validation(conn, s) for s in SHEETS) or lagging_layers(conn):
        return None
    if pending_days(conn, *daily_window(partitions_start)):
        return None  # e.g. a day that only became a partition today
    if not all((reports / name).exists() for name in (GATES_REPORT, DICTIONARY_REPORT)):
        return None
    return last[0]


def _unfinished(conn) -> bool:
    with conn.cursor() as cur:
        cur.execute(UNFINISHED_RUNS)
        return cur.fetchone()[0]
