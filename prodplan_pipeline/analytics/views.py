"""The materialized views over the aggregates and current WIP, which the API reads."""

from __future__ import annotations

import time

VIEWS = (
    "analytics.mv_phase_durations_by_model",
    "analytics.mv_order_leadtime_by_model",
    "analytics.mv_quality_by_phase",
    "analytics.mv_wip_by_phase_current",
    "analytics.mv_employee_phase_stats",
)


def refresh_views(conn) -> dict[str, float]:
    """REFRESH ... CONCURRENTLY: readers keep the old content until the new one is ready."""
    seconds = {}
    with conn.cursor() as cur:
        for view in VIEWS:
            started = time.perf_counter()
            cur.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view}")
            seconds[view] = round(time.perf_counter() - started, 3)
    return seconds
