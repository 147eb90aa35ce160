"""Everything downstream of core, rebuilt in one transaction without Dagster.

The Dagster graph is the production path; this is the same library calls in the graph's order,
for tests and benchmarks that need a fully served warehouse (derived columns, gates, every
daily aggregate, WIP, the views) in seconds rather than a Dagster run per partition.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from prodplan_pipeline.analytics.aggregates import bump_cache_version, days_with_data, refresh_all
from prodplan_pipeline.analytics.wip import refresh_views, refresh_wip
from prodplan_pipeline.derived.backfill import backfill_defects, backfill_orders, backfill_phases
from prodplan_pipeline.derived.orphans import reconcile_orphans
from prodplan_pipeline.quality.gates import evaluate_gates


def rebuild_downstream(warehouse, as_of: datetime | None = None) -> int:
    """Derive, gate, aggregate every day with data, refresh WIP and views; the new cache version."""
    with warehouse.connect() as conn:
        backfill_phases(conn), backfill_orders(conn), backfill_defects(conn)
        reconcile_orphans(conn)
        evaluate_gates(conn)
        first, last = days_with_data(conn)
        if first is not None:
            refresh_all(conn, first, last + timedelta(days=1))
        refresh_wip(conn, as_of or datetime.now())
        refresh_views(conn)
        return bump_cache_version(conn)
