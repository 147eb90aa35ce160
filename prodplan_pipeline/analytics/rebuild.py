"""Everything downstream of core, rebuilt in one transaction without Dagster.

The Dagster graph is the production path; this is the same library calls in the graph's order,
for tests and benchmarks that need a fully served warehouse (derived columns, gates, every
daily aggregate, WIP, the views) in seconds rather than a Dagster run per partition.
"""

from __future__ import annotations

from prodplan_pipeline.analytics.aggregates import days_with_data
from prodplan_pipeline.analytics.convergence import (
    CURRENT_LAYERS,
    daily_window,
    refresh_current_layer,
    refresh_everything,
    refresh_views_layer,
)
from prodplan_pipeline.derived.backfill import backfill_defects, backfill_orders, backfill_phases
from prodplan_pipeline.derived.orphans import reconcile_orphans
from prodplan_pipeline.quality.gates import evaluate_gates
from prodplan_pipeline.settings import Settings
from prodplan_pipeline.warehouse.cache_version import bump_cache_version


def rebuild_downstream(warehouse) -> int:
    """Derive, gate, aggregate every day with data, refresh the current layers and the views;
    the new cache version."""
    with warehouse.connect() as conn:
        backfill_phases(conn), backfill_orders(conn), backfill_defects(conn)
        reconcile_orphans(conn)
        evaluate_gates(conn)
        first, last = days_with_data(conn)
        bounds = daily_window(Settings.from_env().partitions_start)  # as the Dagster partitions
        if first is not None:
            refresh_everything(conn, [(first, last)], *bounds)
        else:
            for table in CURRENT_LAYERS:
                refresh_current_layer(conn, table)
            refresh_views_layer(conn, *bounds)
        return bump_cache_version(conn)
