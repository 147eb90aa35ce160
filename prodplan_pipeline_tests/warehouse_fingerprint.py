"""A fingerprint of everything the warehouse serves, for "the same database" comparisons.

Core, the feature gates, the data-quality issues, every aggregate, the current layers, the views
and the effective rejects (those of the runs whose rows core holds), each as an order-independent
md5 of its rows. Left out: timestamps of when things ran and run ids. Ages are in: they are
measured at the snapshot's data_as_of, so two runs of the same snapshot agree on them.
"""

from __future__ import annotations

from prodplan_pipeline.contract import SHEETS

SERVED = {
    "ops.feature_gates": "feature, relationship, match_rate, numerator, denominator, threshold, status, reason",
    "ops.data_quality_issues": "issue_code, table_name, record_key, detail",
    "analytics.agg_phase_stats_daily": "*",
    "analytics.agg_order_stats_daily": "*",
    "analytics.agg_quality_daily": "*",
    # ages are measured at the snapshot's data_as_of, not the clock; as_of is when it ran
    "analytics.agg_wip_current": "fase_id, produto_id, n_open_phases, n_orders, mean_age_seconds, "
    "p90_age_seconds, max_age_seconds",
    "analytics.phase_flow_current": "*",
    "analytics.defect_pareto_current": "*",
    "analytics.orders_at_risk_current": "*",
    "analytics.mv_phase_durations_by_model": "*",
    "analytics.mv_order_leadtime_by_model": "*",
    "analytics.mv_quality_by_phase": "*",
    "analytics.mv_wip_by_phase_current": "fase_id, n_open_phases, n_orders, max_age_seconds",
    "analytics.mv_employee_phase_stats": "*",
}
# The rejects of the staging run each sheet's core rows come from (the last reconciled one).
EFFECTIVE_REJECTS = """
    (SELECT r.sheet, r.excel_row, r.reason_code, r.column_name, r.raw_value, r.detail
     FROM quarantine.rejects r
     JOIN (SELECT DISTINCT ON (sheet) sheet, staged_run_id FROM ops.ingestion_sheet_runs
           WHERE reconciled AND status IN ('merged', 'skipped_unchanged')
           ORDER BY sheet, run_id DESC) s ON s.sheet = r.sheet AND s.staged_run_id = r.run_id)"""


def _digest(cur, relation: str, columns: str = "*") -> str:
    cur.execute(
        f"SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') "
        f"FROM (SELECT {columns} FROM {relation} x) t"
    )
    return cur.fetchone()[0]


def fingerprint(warehouse) -> dict[str, str]:
    with warehouse.connect() as conn, conn.cursor() as cur:
        prints = {s.core_table: _digest(cur, s.core_table) for s in SHEETS}
        prints.update({name: _digest(cur, name, columns) for name, columns in SERVED.items()})
        prints["effective rejects"] = _digest(cur, EFFECTIVE_REJECTS)
    return prints


def differences(left: dict[str, str], right: dict[str, str]) -> list[str]:
    """The relations whose content differs (empty: the same warehouse)."""
    return sorted(name for name in left if left[name] != right.get(name))
