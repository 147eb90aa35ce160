"""What the plant costs as a Dagster partition dimension (issue 29): the daily aggregates either
partitioned by (day × plant), a plant a dynamic partition, or by day with the plant inside the
rows. Measured on ProdPlan's own Dagster storage (PostgreSQL, pooled and batched writes):

    python bench/partitions.py                     # 10 plants x 2,200 days
    python bench/partitions.py --plants 4 --days 400

For each layout, one toy asset (no SQL: what is measured is Dagster's side) is refreshed once per
plant by a single ranged run over every day, as a first load of each plant would be; then the
reads that the UI, the sensors and the convergence make of its partitions are timed: which
partitions are materialized, and the partition status a data engineer sees. Printed: seconds per
refresh run, per status read, the events stored and the storage's size. Uses
PRODPLAN_DATABASE_URL's server (else the embedded one), in fresh databases dropped at the end.
Prints figures; asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dagster import (  # noqa: E402
    AssetKey,
    BackfillPolicy,
    DailyPartitionsDefinition,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MultiPartitionsDefinition,
    asset,
    materialize,
)
from ingest import Scratch  # noqa: E402

from prodplan_pipeline.settings import Settings  # noqa: E402
from prodplan_pipeline.textui import format_table  # noqa: E402
from prodplan_pipeline.warehouse.connection import libpq_dsn  # noqa: E402

START = date(2020, 1, 1)
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def layouts(days: int):
    daily = DailyPartitionsDefinition(start_date=START.isoformat(), end_date=(START + timedelta(days=days)).isoformat())
    by_plant = MultiPartitionsDefinition({"day": daily, "plant": DynamicPartitionsDefinition(name="plant")})

    @asset(partitions_def=by_plant, backfill_policy=BackfillPolicy.single_run())
    def phase_stats_by_plant_and_day(context):
        return MaterializeResult(metadata={"partitions": len(context.partition_keys)})

    @asset(partitions_def=daily, backfill_policy=BackfillPolicy.single_run())
    def phase_stats_by_day(context):
        return MaterializeResult(metadata={"partitions": len(context.partition_keys)})

    last = (START + timedelta(days=days - 1)).isoformat()
    return {
        # a plant's refresh: every day of that plant (the range keeps the plant fixed)
        "day x plant": (
            phase_stats_by_plant_and_day,
            lambda plant: (f"{START.isoformat()}|{plant}", f"{last}|{plant}"),
        ),
        # a plant's refresh: every day, the plant's rows inside each
        "day, plant inside": (phase_stats_by_day, lambda plant: (START.isoformat(), last)),
    }


def measure(name: str, assets_def, range_of, plants: list[str], scratch: Scratch) -> dict:
    from prodplan_pipeline.orchestration.instance import dagster_environment, open_instance

    database = scratch.name("parts")  # created by the storage, as Dagster's database always is
    storage = scratch.server.set(database=database)
    os.environ["PRODPLAN_DAGSTER_DATABASE"] = database
    os.environ.pop("PRODPLAN_DAGSTER_STORAGE_URL", None)  # the previous layout's, resolved
    os.environ.update(dagster_environment(Settings.from_env()))
    key = AssetKey(assets_def.key.path)
    with open_instance() as instance:
        if name == "day x plant":
            instance.add_dynamic_partitions("plant", plants)
        runs = []
        for plant in plants:
            first, last = range_of(plant)
            started = time.perf_counter()
            result = materialize(
                [assets_def],
                instance=instance,
                run_config=QUIET,
                tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
            )
            runs.append(time.perf_counter() - started)
            assert result.success, f"{name}: the refresh of {plant} failed"
            print(f"  {name}: plant {plant} refreshed in {runs[-1]:.2f} s", flush=True)
        reads = []
        for _ in range(3):
            started = time.perf_counter()
            materialized = instance.get_materialized_partitions(key)
            reads.append(time.perf_counter() - started)
        status = _status_seconds(instance, key, assets_def.partitions_def)
    import psycopg2

    with psycopg2.connect(libpq_dsn(storage)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM event_logs WHERE asset_key IS NOT NULL")
        events = cur.fetchone()[0]
        cur.execute("SELECT pg_database_size(current_database())")
        size = cur.fetchone()[0]
    return {
        "layout": name,
        "partitions": len(materialized),
        "refresh": statistics.median(runs),
        "materialized read": min(reads),
        "status read": status,
        "events": events,
        "storage MB": size / 2**20,
    }


def _status_seconds(instance, key, partitions_def) -> float | None:
    """The materialized/failed/in-progress status the UI's partition bar shows (Dagster's status
    cache, brought up to date from the event log): the slower of two reads, the first fills it."""
    try:
        from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value
    except ImportError:  # an internal of Dagster's: measured when it is where 1.13 has it
        return None
    timings = []
    for _ in range(2):
        started = time.perf_counter()
        try:
            get_and_update_asset_status_cache_value(instance, key, partitions_def, dynamic_partitions_loader=instance)
        except TypeError:  # its signature changed: not measured rather than measured wrong
            return None
        timings.append(time.perf_counter() - started)
    return max(timings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plants", type=int, default=10)
    parser.add_argument("--days", type=int, default=2200)
    args = parser.parse_args()
    if args.plants < 1 or args.days < 1:
        parser.error("--plants and --days must be at least 1")
    warnings.filterwarnings("ignore")  # Dagster's beta/preview notes on backfill policies
    plants = [f"plant-{n:02d}" for n in range(args.plants)]
    scratch = Scratch()
    try:
        rows = [measure(name, *spec, plants, scratch) for name, spec in layouts(args.days).items()]
    finally:
        scratch.close()
    print()
    print(f"{args.plants} plants x {args.days:,} days, one single-run refresh of every day per plant:")
    columns = ["layout", "partitions", "refresh", "materialized read", "status read", "events", "storage MB"]
    print(
        format_table(
            [*columns[:2], "s per plant's refresh", "s materialized read", "s status read", "asset events", "MB"],
            [
                (
                    r["layout"],
                    f"{r['partitions']:,}",
                    f"{r['refresh']:.2f}",
                    f"{r['materialized read']:.3f}",
                    "-" if r["status read"] is None else f"{r['status read']:.3f}",
                    f"{r['events']:,}",
                    f"{r['storage MB']:.1f}",
                )
                for r in rows
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
