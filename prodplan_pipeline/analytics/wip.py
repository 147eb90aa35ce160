"""Current work in progress (open phases) and the materialized views over the aggregates."""

from __future__ import annotations

import time

from prodplan_pipeline.contract import plausible

REFRESH_WIP = f"""
    DELETE FROM analytics.agg_wip_current;
    INSERT INTO analytics.agg_wip_current
    SELECT f.fase_of_fase_id, o.of_produto_id, count(*), count(DISTINCT f.fase_of_of_id),
           avg(extract(epoch FROM %(as_of)s::timestamp - f.fase_of_inicio)),
           percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM %(as_of)s::timestamp - f.fase_of_inicio)),
           max(extract(epoch FROM %(as_of)s::timestamp - f.fase_of_inicio)),
           now()
    FROM core.fases_ordem_fabrico f JOIN core.ordens_fabrico o ON o.of_id = f.fase_of_of_id
    WHERE f.fase_of_fim IS NULL AND {plausible('f.fase_of_inicio')}  -- no age from a typing slip
    GROUP BY 1, 2"""
OPEN_WITHOUT_ORDER = """
    SELECT count(*) FROM core.fases_ordem_fabrico f WHERE f.fase_of_fim IS NULL
      AND NOT EXISTS (SELECT 1 FROM core.ordens_fabrico o WHERE o.of_id = f.fase_of_of_id)"""
VIEWS = ("analytics.mv_phase_durations_by_model", "analytics.mv_order_leadtime_by_model",
         "analytics.mv_quality_by_phase", "analytics.mv_wip_by_phase_current",
         "analytics.mv_employee_phase_stats")


def refresh_wip(conn, as_of) -> dict[str, int]:
    """Replace agg_wip_current (ages measured at ``as_of``, local factory time)."""
    with conn.cursor() as cur:
        cur.execute(REFRESH_WIP, {"as_of": as_of})
        cur.execute("SELECT count(*), coalesce(sum(n_open_phases), 0) FROM analytics.agg_wip_current")
        groups, open_phases = cur.fetchone()
        cur.execute(OPEN_WITHOUT_ORDER)
        missing = cur.fetchone()[0]
    return {"groups": groups, "open_phases": int(open_phases), "open_phases_missing_order": missing}


def refresh_views(conn) -> dict[str, float]:
    """REFRESH ... CONCURRENTLY: readers keep the old content until the new one is ready."""
    seconds = {}
    with conn.cursor() as cur:
        for view in VIEWS:
            started = time.perf_counter()
            cur.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view}")
            seconds[view] = round(time.perf_counter() - started, 3)
    return seconds
