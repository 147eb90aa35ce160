"""The analytics layer: daily partitioned aggregates, the current layers (WIP, phase flow, the
defect Pareto, orders at risk) and the materialized views.

A partition's rows are replaced atomically (in one transaction: recomputed, and the rows that
differ deleted and inserted), so any day can be re-run. Backfills of many days run as one run
with one set-based statement per table (``BackfillPolicy.single_run()``), not one run per day.
"""

# No `from __future__ import annotations`: Dagster inspects the context annotations.
import warnings

from dagster import AssetExecutionContext, AssetKey, BackfillPolicy, BetaWarning, MaterializeResult, asset

from prodplan_pipeline.analytics.aggregates import AGGREGATES, Aggregate, outside_range
from prodplan_pipeline.analytics.convergence import (
    VIEWS_LAYER,
    WIP_LAYER,
    RefreshRange,
    refresh_current_layer,
    refresh_days,
    refresh_views_layer,
)
from prodplan_pipeline.analytics.current import CURRENT_LAYERS, CurrentLayer
from prodplan_pipeline.analytics.views import VIEWS
from prodplan_pipeline.contract import sheet
from prodplan_pipeline.orchestration.daily_partitions import DAILY, partition_bounds
from prodplan_pipeline.orchestration.ingestion import OWNERS, core_key, say
from prodplan_pipeline.orchestration.quality import DERIVED_PHASES
from prodplan_pipeline.orchestration.resources import WarehouseResource
from prodplan_pipeline.orchestration.table_metadata import ROW_COUNT, count_rows, table_definition
from prodplan_pipeline.warehouse.cache_version import bump_cache_version

ORDERS = core_key(sheet("OrdensFabrico"))
EMPLOYEE_LINKS = core_key(sheet("FuncionariosFaseOrdemFabrico"))


def table_key(table: str) -> AssetKey:
    """The asset of a warehouse table ("layer.name"): the layer is the key's prefix."""
    return AssetKey(table.split("."))


def aggregate_key(aggregate: Aggregate) -> AssetKey:
    return table_key(aggregate.table)


WIP, VIEWS_KEY = table_key(WIP_LAYER), table_key(VIEWS_LAYER)
# Not partitioned: refreshed after any day range (or alone, when only they lag).
UNPARTITIONED = [*(table_key(t) for t in CURRENT_LAYERS), VIEWS_KEY]


def refresh_selection(planned: RefreshRange) -> list[AssetKey] | None:
    """A refresh run's assets: the aggregates with a pending day in its range, then the current
    layers and the views (None: every aggregate, the whole refresh job)."""
    if planned.every_aggregate:
        return None
    return [*(table_key(t) for t in planned.aggregates), *UNPARTITIONED]


def build_daily_aggregate(aggregate: Aggregate):
    @asset(
        key=aggregate_key(aggregate),
        deps=[table_key(t) for t in aggregate.reads],
        partitions_def=DAILY,
        backfill_policy=BackfillPolicy.single_run(),
        group_name="analytics",
        kinds={"postgres"},
        owners=OWNERS,
        metadata=table_definition(aggregate.table),
        description=f"{aggregate.table}: {aggregate.description} Facts whose order is "
        "missing from core.ordens_fabrico are left out and counted.",
    )
    def daily_aggregate(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
        window = context.partition_time_window
        start, end = window.start.date(), window.end.date()
        first, last_end = partition_bounds()
        with warehouse.get_warehouse().connect() as conn:
            report = refresh_days(conn, aggregate.table, start, end, first, last_end)
            outside = outside_range(conn, aggregate, first, last_end)
            rows = count_rows(conn, aggregate.table)
            version = bump_cache_version(conn)
        by_groups = "" if report.changed_groups is None else f", {report.changed_groups:,} changed groups recomputed"
        say(
            context,
            f"{aggregate.table} {start}..{end}: {report.rows:,} rows, "
            f"{report.rows_written:,} written{by_groups} ({report.seconds:.2f} s)",
        )
        # Numbers only: a ranged run copies this metadata to every partition's event (thousands
        # on a first load). The row count is the whole table's, not the partition's.
        return MaterializeResult(
            metadata={
                ROW_COUNT: rows,
                "days": (end - start).days,
                "rows_in_days": report.rows,
                # only the rows that differ from the recomputed ones are deleted and written
                "rows_written": report.rows_written,
                "rows_replaced": report.rows_deleted,
                "facts_left_out_missing_order": report.facts_missing_order,
                "facts_outside_partition_range": outside,
                # present when only the groups the snapshots changed were recomputed
                **({"changed_groups": report.changed_groups} if report.changed_groups is not None else {}),
                "seconds": round(report.seconds, 3),
                "cache_version": version,
            }
        )

    daily_aggregate.__name__ = aggregate.name
    return daily_aggregate


def build_current_layer(layer: CurrentLayer):
    @asset(
        key=table_key(layer.table),
        deps=[table_key(t) for t in layer.reads],
        group_name="analytics",
        kinds={"postgres"},
        owners=OWNERS,
        metadata=table_definition(layer.table),
        description=f"{layer.table}: {layer.description} Replaced whole after each snapshot, as of "
        "its data_as_of (the newest plausible phase start or end), never the clock.",
    )
    def current_layer(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
        with warehouse.get_warehouse().connect() as conn:
            counts = refresh_current_layer(conn, layer.table)
            rows = count_rows(conn, layer.table)
            version = bump_cache_version(conn)
        data_as_of = counts.pop("data_as_of")
        say(context, f"{layer.table}: {rows:,} rows as of {data_as_of} ({counts['seconds']:.2f} s)")
        return MaterializeResult(
            metadata={
                ROW_COUNT: rows,
                **counts,
                "cache_version": version,
                "data_as_of": data_as_of.isoformat() if data_as_of else "none",
            }
        )

    current_layer.__name__ = layer.name
    return current_layer


@asset(
    key=VIEWS_KEY,
    deps=[*(aggregate_key(a) for a in AGGREGATES.values()), WIP, EMPLOYEE_LINKS, DERIVED_PHASES],
    group_name="analytics",
    kinds={"postgres"},
    owners=OWNERS,
)
def materialized_views(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
    """The API's materialized views (phase durations and order lead times by model, quality by
    phase, WIP by phase, the phases each employee worked), refreshed CONCURRENTLY so readers
    never wait for a refresh."""
    with warehouse.get_warehouse().connect() as conn:
        seconds = refresh_views_layer(conn, *partition_bounds())
        version = bump_cache_version(conn)
    say(context, f"analytics views: {len(seconds)} refreshed ({sum(seconds.values()):.2f} s)")
    return MaterializeResult(
        metadata={
            **{v.split(".")[1]: s for v, s in seconds.items()},
            "views": ", ".join(VIEWS),
            "cache_version": version,
        }
    )


with warnings.catch_warnings():  # backfill_policy is "beta" in Dagster 1.13; it is what we need
    warnings.simplefilter("ignore", BetaWarning)
    daily_aggregates = [build_daily_aggregate(a) for a in AGGREGATES.values()]
current_layers = [build_current_layer(layer) for layer in CURRENT_LAYERS.values()]
analytics_assets = [*daily_aggregates, *current_layers, materialized_views]
