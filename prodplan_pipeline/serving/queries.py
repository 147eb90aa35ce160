"""What each read endpoint computes: named, parameterised SQL over the analytics tables and views
(and index lookups of single orders), turned into JSON-ready dicts.

KPIs over all days read the materialized views; with a period they read the daily aggregates of
that period. Each statement holds both sources as a UNION ALL whose branches are switched by a
literal boolean, so PostgreSQL plans only the live branch. Units: durations and ages in seconds,
weights in kg, rates in 0..1, timestamps in the factory's local time (as the ERP exports them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any

from prodplan_pipeline.quality.gates import SUPPORTED
from prodplan_pipeline.serving import cursors
from prodplan_pipeline.serving.cache import Snapshot

ALL_DAYS = (date(1, 1, 1), date(9999, 12, 30))


@dataclass(frozen=True)
class Period:
    start: date | None = None  # inclusive
    end: date | None = None  # inclusive

    def params(self) -> dict[str, Any]:
        return {
            "all_days": self.start is None and self.end is None,
            "start": self.start or ALL_DAYS[0],
            "end": self.end or ALL_DAYS[1],
        }

    def as_json(self) -> dict[str, str | None]:
        return {
            "from": self.start.isoformat() if self.start else None,
            "to": self.end.isoformat() if self.end else None,
        }


# --- gates --------------------------------------------------------------------------------------

GATE = """SELECT feature, status, match_rate, threshold, numerator, denominator, reason, evaluated_at
          FROM ops.feature_gates WHERE feature = %s"""
ALL_GATES = """SELECT feature, relationship, status, match_rate, threshold, numerator, denominator,
                      reason, evaluated_at FROM ops.feature_gates ORDER BY feature"""


def gate_refusal(db, feature: str) -> dict | None:
    """The NOT_SUPPORTED_BY_DATA answer when ``feature``'s gate is off (or never evaluated)."""
    gate = db.row(GATE, (feature,))
    if gate is not None and gate["status"] == SUPPORTED:
        return None
    if gate is None:
        return {
            "status": "NOT_SUPPORTED_BY_DATA",
            "feature": feature,
            "match_rate": None,
            "threshold": None,
            "reason": "the feature gates have not been evaluated yet: run an ingestion first",
        }
    return {
        "status": gate["status"],
        "feature": feature,
        "match_rate": gate["match_rate"],
        "threshold": gate["threshold"],
        "reason": gate["reason"],
        "numerator": gate["numerator"],
        "denominator": gate["denominator"],
        "evaluated_at": gate["evaluated_at"],
    }


def features(db, endpoints_by_feature: dict[str, list[str]]) -> dict:
    items = db.rows(ALL_GATES)
    for item in items:
        item["endpoints"] = endpoints_by_feature.get(item["feature"], [])
    return {"items": items, "next_cursor": None}


# --- KPIs ---------------------------------------------------------------------------------------

PHASE_SOURCE = """
    SELECT produto_id, fase_id, n, mean_duration_seconds * n AS sum_seconds,
           min_duration_seconds AS min_seconds, max_duration_seconds AS max_seconds, n_rework
    FROM analytics.mv_phase_durations_by_model WHERE %(all_days)s
    UNION ALL
    SELECT produto_id, fase_id, n, sum_duration_seconds, min_duration_seconds,
           max_duration_seconds, n_rework
    FROM analytics.agg_phase_stats_daily
    WHERE NOT %(all_days)s AND snapshot_date BETWEEN %(start)s AND %(end)s"""
ORDER_SOURCE = """
    SELECT produto_id, n, sum_lead_time_seconds AS sum_lead_seconds, n_with_lead_time, n_on_time,
           n_late, n_no_due_date
    FROM analytics.mv_order_leadtime_by_model WHERE %(all_days)s
    UNION ALL
    SELECT produto_id, n, sum_lead_time_seconds, n_with_lead_time, n_on_time, n_late, n_no_due_date
    FROM analytics.agg_order_stats_daily
    WHERE NOT %(all_days)s AND snapshot_date BETWEEN %(start)s AND %(end)s"""
QUALITY_SOURCE = """
    SELECT fase_avaliacao_id, NULL::integer AS produto_id, gravidade, n_defects
    FROM analytics.mv_quality_by_phase WHERE %(all_days)s
    UNION ALL
    SELECT fase_avaliacao_id, produto_id, gravidade, n_defects FROM analytics.agg_quality_daily
    WHERE NOT %(all_days)s AND snapshot_date BETWEEN %(start)s AND %(end)s"""

# Each source is scanned once: one aggregate row per source, cross-joined.
OVERVIEW = f"""
    WITH p AS ({PHASE_SOURCE}), o AS ({ORDER_SOURCE}), q AS ({QUALITY_SOURCE})
    SELECT * FROM
      (SELECT coalesce(sum(n), 0) AS phases_finished, sum(sum_seconds) / nullif(sum(n), 0)
                  AS mean_phase_duration_seconds, coalesce(sum(n_rework), 0) AS phases_rework FROM p) pa,
      (SELECT coalesce(sum(n), 0) AS orders_finished, sum(sum_lead_seconds) / nullif(sum(n_with_lead_time), 0)
                  AS mean_lead_time_seconds, coalesce(sum(n_on_time), 0) AS orders_on_time,
              coalesce(sum(n_late), 0) AS orders_late, coalesce(sum(n_no_due_date), 0) AS orders_no_due_date
       FROM o) oa,
      (SELECT coalesce(sum(n_defects), 0) AS defects FROM q) qa,
      (SELECT coalesce(sum(n_open_phases), 0) AS open_phases, count(DISTINCT fase_id) AS phases_with_wip
       FROM analytics.mv_wip_by_phase_current) wa"""
# Grouped before the joins: the names and WIP are looked up for ~40 phases, not ~80k daily rows.
BY_PHASE = f"""
    WITH g AS (SELECT fase_id, sum(n) AS n, sum(sum_seconds) AS s, min(min_seconds) AS mn,
                      max(max_seconds) AS mx, sum(n_rework) AS r FROM ({PHASE_SOURCE}) p GROUP BY 1)
    SELECT g.fase_id, c.fase_nome, g.n AS n_finished, g.s / g.n AS mean_duration_seconds,
           g.mn AS min_duration_seconds, g.mx AS max_duration_seconds, g.r AS n_rework,
           g.r::double precision / g.n AS rework_share, coalesce(w.n_open_phases, 0) AS open_phases,
           w.max_age_seconds AS max_open_age_seconds
    FROM g LEFT JOIN core.fases_catalogo c ON c.fase_id = g.fase_id
           LEFT JOIN analytics.mv_wip_by_phase_current w ON w.fase_id = g.fase_id
    ORDER BY g.fase_id"""
BY_PRODUCT = f"""
    WITH o AS ({ORDER_SOURCE}), p AS ({PHASE_SOURCE}),
         po AS (SELECT produto_id, sum(n) n, sum(n_with_lead_time) nl, sum(sum_lead_seconds) s,
                       sum(n_on_time) ot, sum(n_late) late, sum(n_no_due_date) nd FROM o GROUP BY 1),
         pp AS (SELECT produto_id, sum(n) n, sum(sum_seconds) s, sum(n_rework) r FROM p GROUP BY 1)
    SELECT coalesce(po.produto_id, pp.produto_id) AS produto_id, coalesce(po.n, 0) AS orders_finished,
           po.s / nullif(po.nl, 0) AS mean_lead_time_seconds, coalesce(po.ot, 0) AS orders_on_time,
           coalesce(po.late, 0) AS orders_late, coalesce(po.nd, 0) AS orders_no_due_date,
           po.ot::double precision / nullif(po.ot + po.late, 0) AS on_time_rate,
           coalesce(pp.n, 0) AS phases_finished, pp.s / nullif(pp.n, 0) AS mean_phase_duration_seconds,
           coalesce(pp.r, 0) AS phases_rework
    FROM po FULL JOIN pp ON pp.produto_id = po.produto_id ORDER BY 1"""
PRODUCT_ATTRIBUTES = """
    SELECT produto_id, produto_nome, produto_peso_desmolde::float AS peso_desmolde_kg,
           produto_peso_acabamento::float AS peso_acabamento_kg,
           produto_qtd_gel_deck::float AS gel_deck_kg, produto_qtd_gel_casco::float AS gel_casco_kg
    FROM core.modelos WHERE produto_id = ANY(%s)"""
BY_EMPLOYEE = """
    SELECT e.funcionario_id, f.funcionario_nome, f.funcionario_activo = 1 AS active, e.n_phases,
           e.n_as_chief, e.n_with_duration, e.sum_duration_seconds, e.mean_duration_seconds,
           e.n_rework, e.n_rework::double precision / e.n_phases AS rework_share, e.first_day, e.last_day
    FROM analytics.mv_employee_phase_stats e
    LEFT JOIN core.funcionarios f ON f.funcionario_id = e.funcionario_id
    ORDER BY e.funcionario_id"""


def overview(db, period: Period) -> dict:
    r = db.row(OVERVIEW, period.params())
    judged = r["orders_on_time"] + r["orders_late"]
    return {
        "period": period.as_json(),
        "orders": {
            "finished": r["orders_finished"],
            "mean_lead_time_seconds": r["mean_lead_time_seconds"],
            "on_time": r["orders_on_time"],
            "late": r["orders_late"],
            "no_due_date": r["orders_no_due_date"],
            "on_time_rate": r["orders_on_time"] / judged if judged else None,
        },
        "phases": {
            "finished": r["phases_finished"],
            "mean_duration_seconds": r["mean_phase_duration_seconds"],
            "rework": r["phases_rework"],
            "rework_share": r["phases_rework"] / r["phases_finished"] if r["phases_finished"] else None,
        },
        "quality": {"defects": r["defects"]},
        "wip": {"open_phases": r["open_phases"], "phases_with_wip": r["phases_with_wip"]},
    }


def by_phase(db, period: Period) -> dict:
    return {"period": period.as_json(), "items": db.rows(BY_PHASE, period.params()), "next_cursor": None}


def by_product(db, period: Period, with_attributes: bool) -> dict:
    items = db.rows(BY_PRODUCT, period.params())
    if with_attributes:
        found = {a.pop("produto_id"): a for a in db.rows(PRODUCT_ATTRIBUTES, ([i["produto_id"] for i in items],))}
        for item in items:
            item["attributes"] = found.get(item["produto_id"])  # None: not in Modelos
    return {"period": period.as_json(), "items": items, "next_cursor": None}


def by_employee(db) -> dict:
    return {"items": db.rows(BY_EMPLOYEE), "next_cursor": None}


# --- quality ------------------------------------------------------------------------------------

QUALITY_OVERVIEW = f"""
    WITH q AS ({QUALITY_SOURCE}), o AS ({ORDER_SOURCE})
    SELECT (SELECT coalesce(sum(n_defects), 0) FROM q) AS defects,
           (SELECT coalesce(sum(n), 0) FROM o) AS orders_finished,
           coalesce((SELECT jsonb_object_agg(gravidade, n) FROM
                     (SELECT gravidade, sum(n_defects) n FROM q GROUP BY 1) s), '{{}}'::jsonb) AS by_severity"""
QUALITY_BY_PHASE = f"""
    WITH q AS ({QUALITY_SOURCE})
    SELECT q.fase_avaliacao_id, c.fase_nome, sum(q.n_defects) AS defects,
           coalesce(sum(q.n_defects) FILTER (WHERE q.gravidade = 1), 0) AS severity_1,
           coalesce(sum(q.n_defects) FILTER (WHERE q.gravidade = 2), 0) AS severity_2,
           coalesce(sum(q.n_defects) FILTER (WHERE q.gravidade = 3), 0) AS severity_3
    FROM q LEFT JOIN core.fases_catalogo c ON c.fase_id = q.fase_avaliacao_id
    GROUP BY 1, 2 ORDER BY 1"""
# By product always reads the daily table (~30k rows at full size): the view has no product.
QUALITY_BY_PRODUCT = f"""
    WITH q AS (SELECT produto_id, gravidade, n_defects FROM analytics.agg_quality_daily
               WHERE %(all_days)s OR snapshot_date BETWEEN %(start)s AND %(end)s),
         o AS (SELECT produto_id, sum(n) AS n FROM ({ORDER_SOURCE}) s GROUP BY 1)
    SELECT q.produto_id, sum(q.n_defects) AS defects,
           coalesce(sum(q.n_defects) FILTER (WHERE q.gravidade = 1), 0) AS severity_1,
           coalesce(sum(q.n_defects) FILTER (WHERE q.gravidade = 2), 0) AS severity_2,
           coalesce(sum(q.n_defects) FILTER (WHERE q.gravidade = 3), 0) AS severity_3,
           coalesce(max(o.n), 0) AS orders_finished,
           sum(q.n_defects)::double precision / nullif(max(o.n), 0) AS defects_per_finished_order
    FROM q LEFT JOIN o ON o.produto_id = q.produto_id GROUP BY 1 ORDER BY 1"""


def quality_overview(db, period: Period) -> dict:
    r = db.row(QUALITY_OVERVIEW, period.params())
    return {
        "period": period.as_json(),
        "defects": r["defects"],
        "by_severity": r["by_severity"],
        "orders_finished": r["orders_finished"],
        "defects_per_finished_order": r["defects"] / r["orders_finished"] if r["orders_finished"] else None,
    }


def quality_by_phase(db, period: Period) -> dict:
    return {"period": period.as_json(), "items": db.rows(QUALITY_BY_PHASE, period.params()), "next_cursor": None}


def quality_by_product(db, period: Period) -> dict:
    return {"period": period.as_json(), "items": db.rows(QUALITY_BY_PRODUCT, period.params()), "next_cursor": None}


# --- orders -------------------------------------------------------------------------------------

ORDER_COLUMNS = """o.of_id, o.of_produto_id AS produto_id, o.of_fase_id AS fase_id,
    CASE WHEN o.of_data_acabamento IS NULL THEN 'open' ELSE 'finished' END AS status,
    o.of_data_criacao AS created_at, o.of_data_acabamento AS finished_at,
    o.of_data_transporte AS due_date, o.lead_time_seconds, o.is_on_time"""
ORDERS_PAGE = f"""
    SELECT {ORDER_COLUMNS} FROM core.ordens_fabrico o
    WHERE o.of_id > %(after)s
      -- Parenthesised: :: binds before unary minus, so -2147483648::integer would overflow.
      AND ((%(product)s)::integer IS NULL OR o.of_produto_id = %(product)s)
      AND ((%(phase)s)::integer IS NULL OR o.of_fase_id = %(phase)s)
      AND (%(status)s::text IS NULL
           OR (%(status)s = 'open' AND o.of_data_acabamento IS NULL)
           OR (%(status)s = 'finished' AND o.of_data_acabamento IS NOT NULL)
           OR (%(status)s = 'on_time' AND o.is_on_time)
           OR (%(status)s = 'late' AND NOT o.is_on_time))
      AND o.of_data_criacao >= %(created_from)s AND o.of_data_criacao < %(created_before)s
    ORDER BY o.of_id LIMIT %(limit)s"""
ORDER = f"""
    SELECT {ORDER_COLUMNS}, m.produto_nome, ph.phases, ph.open_phases,
           (SELECT count(*) FROM core.erros_ordem_fabrico e WHERE e.erro_of_id = o.of_id) AS defects
    FROM core.ordens_fabrico o LEFT JOIN core.modelos m ON m.produto_id = o.of_produto_id
    CROSS JOIN LATERAL (SELECT count(*) AS phases, count(*) FILTER (WHERE f.fase_of_fim IS NULL) AS open_phases
                        FROM core.fases_ordem_fabrico f WHERE f.fase_of_of_id = o.of_id) ph
    WHERE o.of_id = $1"""
# The order LEFT JOIN its phases: no row = unknown order; one row without fase_of_id = no phases.
ORDER_PHASES = """
    SELECT f.fase_of_id, f.fase_of_fase_id AS fase_id, c.fase_nome, f.fase_of_sequencia AS sequencia,
           f.fase_of_inicio AS started_at, f.fase_of_fim AS finished_at, f.duration_seconds,
           f.fase_of_fim IS NULL AS is_open, f.fase_of_retorno = 1 AS rework,
           f.fase_of_coeficiente::float AS coeficiente, f.fase_of_peso::float AS peso_kg,
           f.fase_of_turno AS turno
    FROM core.ordens_fabrico o
    LEFT JOIN core.fases_ordem_fabrico f ON f.fase_of_of_id = o.of_id
    LEFT JOIN core.fases_catalogo c ON c.fase_id = f.fase_of_fase_id
    WHERE o.of_id = $1 ORDER BY f.fase_of_sequencia, f.fase_of_inicio, f.fase_of_id"""
# Prepared once per connection (see ReadPool): the per-order lookups, hot and cheap to execute.
PREPARED = {"order_detail": ORDER, "order_phases": ORDER_PHASES}


@dataclass(frozen=True)
class OrderFilters:
    product: int | None = None
    phase: int | None = None
    status: str | None = None
    created_from: date | None = None
    created_to: date | None = None  # inclusive

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def orders_page(db, filters: OrderFilters, after: int | None, limit: int) -> dict:
    """One page in of_id order: the rows after the key ``after`` (keyset, never OFFSET); the API
    decodes the cursor into it once, before any caching."""
    params = {
        **filters.as_dict(),
        "after": -(2**31) if after is None else after,
        "limit": limit + 1,
        "created_from": filters.created_from or ALL_DAYS[0],
        "created_before": (filters.created_to or ALL_DAYS[1]) + timedelta(days=1),
    }
    return cursors.page(db.rows(ORDERS_PAGE, params), limit, "of_id", filters.as_dict())


def order(db, of_id: int) -> dict | None:
    found = db.execute_prepared("order_detail", of_id)
    return found[0] if found else None


def order_phases(db, of_id: int) -> dict | None:
    rows = db.execute_prepared("order_phases", of_id)
    if not rows:
        return None
    items = [r for r in rows if r["fase_of_id"] is not None]
    return {"of_id": of_id, "items": items, "next_cursor": None}


# --- WIP, runs, health --------------------------------------------------------------------------

SCHEDULE = """
    SELECT w.fase_id, c.fase_nome, c.fase_sequencia, w.n_open_phases, w.n_orders, w.max_age_seconds,
           w.as_of
    FROM analytics.mv_wip_by_phase_current w LEFT JOIN core.fases_catalogo c ON c.fase_id = w.fase_id
    ORDER BY c.fase_sequencia NULLS LAST, w.fase_id"""
RUNS_PAGE = """
    SELECT r.run_id, r.dagster_run_id, r.status, r.started_at, r.finished_at, r.workbook_path,
           r.workbook_sha256, r.forced, r.message,
           (SELECT coalesce(jsonb_agg(jsonb_build_object(
                'sheet', s.sheet, 'status', s.status, 'rows_excel', s.rows_excel,
                'rows_inserted', s.rows_inserted, 'rows_updated', s.rows_updated,
                'rows_deleted', s.rows_deleted, 'rows_rejected', s.rows_rejected,
                'reconciled', s.reconciled) ORDER BY s.sheet), '[]'::jsonb)
            FROM ops.ingestion_sheet_runs s WHERE s.run_id = r.run_id) AS sheets
    FROM ops.ingestion_runs r WHERE r.run_id < %(before)s ORDER BY r.run_id DESC LIMIT %(limit)s"""
HEALTH = """
    SELECT v.version AS cache_version, v.updated_at AS data_changed_at,
           (SELECT max(finished_at) FROM ops.ingestion_runs WHERE status = 'succeeded')
               AS last_successful_ingestion,
           (SELECT jsonb_object_agg(feature, status) FROM ops.feature_gates) AS feature_gates,
           l.facts_run_id, l.aggregates_run_id, l.aggregates_catching_up
    FROM ops.cache_version v CROSS JOIN ops.snapshot_labels l"""


def schedule_current(db) -> dict:
    items = db.rows(SCHEDULE)
    return {"as_of": max((i["as_of"] for i in items), default=None), "items": items, "next_cursor": None}


RUNS_CURSOR_SCOPE = {"list": "ingestion_runs"}  # what a runs cursor is bound to (no filters)


def ingestion_runs(db, before: int | None, limit: int) -> dict:
    rows = db.rows(RUNS_PAGE, {"before": 2**62 if before is None else before, "limit": limit + 1})
    return cursors.page(rows, limit, "run_id", RUNS_CURSOR_SCOPE)


def health(db) -> dict:
    """The labels as data responses carry them, but of this read (consistent with its version)."""
    state = db.row(HEALTH) or {}
    if state:
        state["snapshot"] = Snapshot(
            state.pop("facts_run_id"), state.pop("aggregates_run_id"), state.pop("aggregates_catching_up")
        ).as_json()
    return state


# --- planner analytics (as of the snapshot's data_as_of) -----------------------------------------

# The data_as_of a current layer's rows were computed at: its snapshot's.
LAYER_DATA_AS_OF = """
    SELECT r.data_as_of FROM ops.watermarks w JOIN ops.ingestion_runs r ON r.run_id = w.value::bigint
    WHERE w.name = %(layer)s"""
BOTTLENECKS = """
    SELECT fase_id, fase_nome, wip, throughput_per_day, expected_wait_days, p90_wip_age_seconds,
           finished_30d
    FROM analytics.phase_flow_current
    ORDER BY expected_wait_days DESC NULLS LAST, wip DESC, fase_id"""
# What a Pareto groups by: (key, label, the reason a key is unknown, the join naming it). Fixed
# SQL chosen by the validated ``by``; nothing of the request reaches the statement's text.
PARETO_BY = {
    "description": ("p.erro_descricao", "p.erro_descricao", "NULL::text", ""),
    "culprit_phase": (
        "p.culprit_fase_id",
        "c.fase_nome",
        "p.culprit_unknown",
        "LEFT JOIN core.fases_catalogo c ON c.fase_id = p.culprit_fase_id",
    ),
    "product": (
        "p.produto_id",
        "m.produto_nome",
        "p.product_unknown",
        "LEFT JOIN core.modelos m ON m.produto_id = p.produto_id",
    ),
}
PARETO = {
    by: f"""
    SELECT {key} AS key, {label} AS label, {reason} AS reason, sum(p.n)::bigint AS n
    FROM analytics.defect_pareto_current p {join}
    WHERE %(all_days)s OR p.day BETWEEN %(start)s AND %(end)s
    GROUP BY 1, 2, 3"""
    for by, (key, label, reason, join) in PARETO_BY.items()
}
REASONS = {
    "no_culprit_given": "no culprit phase row given (Erro_FaseOfCulpada empty)",
    "culprit_phase_row_missing": "the culprit phase row is not in FasesOrdemFabrico",
    "order_missing": "the defect's order is not in OrdensFabrico",
}
AT_RISK_PAGE = """
    SELECT a.risk_rank, a.of_id, a.produto_id, m.produto_nome, a.due_date, a.eta, a.slack_seconds,
           a.remaining_phases, a.expected_remaining_seconds
    FROM analytics.orders_at_risk_current a LEFT JOIN core.modelos m ON m.produto_id = a.produto_id
    WHERE a.risk_rank > %(after)s ORDER BY a.risk_rank LIMIT %(limit)s"""
AT_RISK_SUMMARY = """
    SELECT count(*) AS open_orders_with_due_date, count(*) FILTER (WHERE unassessed_reason IS NULL) AS assessed,
           coalesce((SELECT jsonb_object_agg(reason, n) FROM (
               SELECT unassessed_reason AS reason, count(*) AS n FROM analytics.orders_at_risk_current
               WHERE unassessed_reason IS NOT NULL GROUP BY 1) r), '{}'::jsonb) AS unassessed
    FROM analytics.orders_at_risk_current"""
AT_RISK_CURSOR_SCOPE = {"list": "orders_at_risk"}
PLANNER_UNITS = {
    "wip": "phase rows",
    "throughput_per_day": "phase rows finished per day",
    "expected_wait_days": "days",
    "slack_seconds": "seconds (negative: due before the eta)",
    "shares": "ratio 0..1",
    "data_as_of": "factory local time, ISO 8601",
}


def layer_data_as_of(db, layer: str):
    found = db.row(LAYER_DATA_AS_OF, {"layer": layer})
    return found["data_as_of"] if found else None


def bottlenecks(db) -> dict:
    return {
        "data_as_of": layer_data_as_of(db, "analytics.phase_flow_current"),
        "window_days": 30,
        "items": db.rows(BOTTLENECKS),
        "next_cursor": None,
    }


def defect_pareto(db, by: str, period: Period) -> dict:
    known, unknown = [], {}
    for row in db.rows(PARETO[by], period.params()):
        if row["reason"] is None:
            known.append({"key": row["key"], "label": row["label"], "n": row["n"]})
        else:
            unknown[row["reason"]] = unknown.get(row["reason"], 0) + row["n"]
    if unknown:
        known.append(
            {
                "key": "unknown",
                "label": "unknown",
                "n": sum(unknown.values()),
                "reasons": unknown,
                "reason": "; ".join(f"{REASONS[r]}: {n}" for r, n in sorted(unknown.items())),
            }
        )
    total = sum(item["n"] for item in known)
    items, running = sorted(known, key=lambda item: (-item["n"], str(item["key"]))), 0
    for item in items:
        running += item["n"]
        item["share"], item["cumulative_share"] = item["n"] / total, running / total
    return {
        "data_as_of": layer_data_as_of(db, "analytics.defect_pareto_current"),
        "by": by,
        "period": period.as_json(),
        "defects": total,
        "items": items,
        "next_cursor": None,
    }


def orders_at_risk(db, after: int | None, limit: int) -> dict:
    summary = db.row(AT_RISK_SUMMARY)
    rows = db.rows(AT_RISK_PAGE, {"after": 0 if after is None else after, "limit": limit + 1})
    total = summary["open_orders_with_due_date"]
    return {
        "data_as_of": layer_data_as_of(db, "analytics.orders_at_risk_current"),
        "open_orders_with_due_date": total,
        "assessed": summary["assessed"],
        "share_assessed": summary["assessed"] / total if total else None,
        "unassessed": summary["unassessed"],
        **cursors.page(rows, limit, "risk_rank", AT_RISK_CURSOR_SCOPE),
    }
