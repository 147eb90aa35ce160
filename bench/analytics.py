"""Analytics benchmark: full backfill of every daily partition, one-partition refresh, and the
incremental cycle (1% of phase rows changed across ~20 days -> ingest -> only those days).

    python bench/analytics.py --scale 1

Prints seconds for the set-based SQL (what the assets run) and, for comparison in the same
process, a Dagster run of the refresh job over a range of days (its per-partition bookkeeping).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import drop, peak_rss_mb, scratch_warehouse  # noqa: E402
from workbooks import OUT, change_phase_rows, sample_workbook  # noqa: E402

from prodplan_pipeline.analytics.aggregates import AGGREGATES, days_with_data, refresh, refresh_all  # noqa: E402
from prodplan_pipeline.analytics.convergence import contiguous_ranges, refresh_ranges  # noqa: E402
from prodplan_pipeline.derived.backfill import backfill_defects, backfill_orders, backfill_phases  # noqa: E402
from prodplan_pipeline.ingest.pipeline import ingest_workbook  # noqa: E402
from prodplan_pipeline.orchestration.daily_partitions import DAILY, partition_days  # noqa: E402
from prodplan_pipeline.textui import format_table  # noqa: E402


def timed(function, *args):
    started = time.perf_counter()
    value = function(*args)
    return time.perf_counter() - started, value


def load(warehouse, path: Path) -> int:
    run_id = ingest_workbook(warehouse, path).run_id
    with warehouse.connect() as conn:
        backfill_phases(conn), backfill_orders(conn), backfill_defects(conn)
    return run_id


def changed_days(warehouse, run_id: int):
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT DISTINCT day FROM ops.changed_days WHERE run_id = %s", (run_id,))
        return partition_days([d for (d,) in cur.fetchall()])[0]


def dagster_range_run(warehouse, first, last) -> float:
    """The refresh job over first..last through Dagster, on a throwaway instance."""
    import os

    from dagster import DagsterInstance

    from prodplan_pipeline.orchestration.daily_partitions import DAILY_REFRESH_JOB, range_tags
    from prodplan_pipeline.orchestration.definitions import defs

    os.environ["PRODPLAN_DATABASE_URL"] = warehouse.url.render_as_string(hide_password=False)
    job = defs.resolve_job_def(DAILY_REFRESH_JOB)
    with DagsterInstance.ephemeral() as instance:
        started = time.perf_counter()
        result = job.execute_in_process(
            instance=instance,
            tags=range_tags(first, last),
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        )
        assert result.success
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument(
        "--dagster-days", type=int, default=30, help="days in the Dagster comparison run (its cost grows per partition)"
    )
    args = parser.parse_args()
    path = sample_workbook(args.scale)
    warehouse = scratch_warehouse("analytics")
    try:
        run_id = load(warehouse, path)
        with warehouse.connect() as conn:
            first, last = days_with_data(conn)
        first = max(first, DAILY.get_first_partition_window().start.date())  # no 2006 partition
        end = last + timedelta(days=1)
        rows = []
        with warehouse.connect() as conn:
            seconds, reports = timed(refresh_all, conn, first, end)
        rows.append((f"full backfill, {(end - first).days:,} days, set-based", round(seconds, 2), "≤ 5 s"))
        busiest = max(changed_days(warehouse, run_id), key=lambda d: d.toordinal() % 97)
        with warehouse.connect() as conn:
            one = sum(timed(refresh, conn, a, busiest, busiest + timedelta(days=1))[0] for a in AGGREGATES.values())
        rows.append((f"one partition ({busiest}), all three aggregates", round(one, 3), "≤ 0.2 s"))
        span = timedelta(days=args.dagster_days - 1)
        rows.append(
            (
                f"Dagster run over {args.dagster_days} partitions (bookkeeping included)",
                round(dagster_range_run(warehouse, first, first + span), 2),
                "",
            )
        )
        rows += incremental_cycle(warehouse, path)
        print(format_table(["measure", "seconds", "target"], rows))
        print(
            f"aggregate rows after the full backfill: {sum(r.rows for r in reports):,}; peak RSS {peak_rss_mb():.0f} MB"
        )
    finally:
        drop(warehouse)
    return 0


def incremental_cycle(warehouse, path: Path) -> list[tuple]:
    """Change 1% of phase rows on ~20 days, ingest, refresh exactly the changed days."""
    changed_path = OUT / f"{path.stem}_1pct_20days.xlsx"
    n = change_phase_rows(path, changed_path, share=0.01, days=20)
    seconds_ingest, run_id = timed(load, warehouse, changed_path)
    days = changed_days(warehouse, run_id)
    ranges = refresh_ranges(days)
    with warehouse.connect() as conn:
        seconds_refresh, _ = timed(lambda: [refresh_all(conn, a, b + timedelta(days=1)) for a, b in ranges])
    exact = ranges == contiguous_ranges(days)
    return [
        (f"incremental: ingest of {n:,} changed phase rows", round(seconds_ingest, 2), ""),
        (
            f"incremental: refresh of the {len(days)} changed days in {len(ranges)} runs "
            f"({'exactly the changed days' if exact else 'merged ranges'})",
            round(seconds_refresh, 2),
            "",
        ),
    ]


if __name__ == "__main__":
    sys.exit(main())
