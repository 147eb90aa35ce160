"""Ingestion benchmark: prints seconds per stage, wall time, peak RSS, and the ratio against a
naive baseline (pandas.read_excel with openpyxl + DataFrame.to_sql) run in the same process.

    python bench/ingest.py --scale 1            # the real size, ~1.1 M rows
    python bench/ingest.py --scale 0.1 --skip-baseline

Uses PRODPLAN_DATABASE_URL's server when set, else the embedded server; every run works in fresh
databases (bench_ingest_*) that are dropped at the end.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workbooks import OUT, change_phase_rows, sample_workbook  # noqa: E402

from prodplan_pipeline.contract import SHEETS  # noqa: E402
from prodplan_pipeline.ingest.pipeline import ingest_workbook  # noqa: E402
from prodplan_pipeline.settings import Settings  # noqa: E402
from prodplan_pipeline.textui import format_table  # noqa: E402
from prodplan_pipeline.warehouse import Warehouse  # noqa: E402
from prodplan_pipeline.warehouse.connection import ensure_database, libpq_dsn, server_url  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scratch_warehouse(purpose: str) -> Warehouse:
    url = server_url(Settings.from_env()).set(database=f"bench_{purpose}_{uuid.uuid4().hex[:6]}")
    ensure_database(url)
    warehouse = Warehouse(url)
    warehouse.migrate()
    return warehouse


def drop(warehouse: Warehouse) -> None:
    import psycopg2

    warehouse.dispose()
    admin = psycopg2.connect(libpq_dsn(warehouse.url.set(database="postgres")))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{warehouse.url.database}" WITH (FORCE)')
    admin.close()


def timed_ingest(warehouse: Warehouse, path: Path, **kwargs) -> tuple[float, dict, object]:
    marks: dict[str, float] = {}
    started = time.perf_counter()
    result = ingest_workbook(warehouse, path, on_stage=lambda s: marks.__setitem__(s, time.perf_counter()),
                             **kwargs)
    ended = time.perf_counter()
    # One commit holds the nine merges, the derived values and the count checks (the snapshot
    # lands whole or not at all).
    stages = {"stage (read + COPY)": marks["commit"] - marks["stage"],
              "commit (merge + derived + checks)": ended - marks["commit"]}
    assert result.passed, "the benchmark's ingestion must reconcile"
    return ended - started, stages, result


def report_full(seconds: float, stages: dict, result) -> None:
    read = sum(o.read_seconds for o in result.staged.values())
    merge_sql = sum(m.counts.seconds for m in result.merged.values() if m.counts)
    rows = sum(o.rows_excel for o in result.staged.values())
    print(f"\nfull ingest of {rows:,} rows: {seconds:.2f} s wall, peak RSS {peak_rss_mb():.0f} MB")
    table = [(name, round(value, 2)) for name, value in stages.items()]
    table += [("  of which: reading sheets (sum over 2 threads)", round(read, 2)),
              ("  of which: merge SQL", round(merge_sql, 2))]
    print(format_table(["stage", "seconds"], table))
    print(format_table(["sheet", "rows", "read s", "read+stage s", "merge s"], [
        (s.name, result.staged[s.name].rows_excel, round(result.staged[s.name].read_seconds, 2),
         round(result.staged[s.name].seconds, 2), round(result.merged[s.name].counts.seconds, 2))
        for s in SHEETS]))


def naive_baseline(path: Path) -> float:
    """What the replaced system did: pandas + openpyxl for every sheet, then to_sql."""
    import pandas as pd

    warehouse = scratch_warehouse("baseline")
    try:
        started = time.perf_counter()
        frames = pd.read_excel(path, sheet_name=None, engine="openpyxl")
        read = time.perf_counter() - started
        for name, frame in frames.items():
            frame.to_sql(name.lower(), warehouse.engine, schema="staging", if_exists="replace",
                         index=False, chunksize=10_000)
        total = time.perf_counter() - started
        print(f"naive baseline: read {read:.1f} s, to_sql {total - read:.1f} s, total {total:.1f} s")
        return total
    finally:
        drop(warehouse)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    path = sample_workbook(args.scale, progress=lambda m: print(f"  sample: {m}", flush=True))
    print(f"workbook {path} ({path.stat().st_size / 1e6:.1f} MB)")
    warehouse = scratch_warehouse("ingest")
    try:
        seconds, stages, result = timed_ingest(warehouse, path)
        report_full(seconds, stages, result)
        unchanged, _, _ = timed_ingest(warehouse, path)
        print(f"\nunchanged re-ingest: {unchanged:.2f} s (every sheet skipped by its content hash)")
        forced, _, _ = timed_ingest(warehouse, path, force=True)
        print(f"forced re-ingest of unchanged content: {forced:.2f} s (read and merged, nothing written)")
        changed_path = OUT / f"{path.stem}_1pct.xlsx"
        n = change_phase_rows(path, changed_path, share=0.01)
        changed, _, res = timed_ingest(warehouse, changed_path)
        updated = res.merged["FasesOrdemFabrico"].counts.updated
        print(f"1% of phase rows changed ({n:,} rows; {updated:,} updated): {changed:.2f} s")
    finally:
        drop(warehouse)
    if not args.skip_baseline:
        baseline = naive_baseline(path)
        print(f"\nratio: naive baseline {baseline:.1f} s / ProdPlan {seconds:.2f} s = {baseline / seconds:.1f}x faster")
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MB (baseline included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
