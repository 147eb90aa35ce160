"""The current analytics layers: tables replaced whole after each snapshot, every figure measured
as of the snapshot's own time (``data_as_of``: its newest plausible phase start or end), never
the clock, so re-serving an old export gives the same numbers.

Each layer is declared once (table, description, what it reads, its refresh, its counts); its
Dagster asset, its watermark and its place in the convergence derive from the entry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from prodplan_pipeline.contract import plausible

# A snapshot's "now" is measured and recorded by its commit: ingest.runs.record_data_as_of.
# The data_as_of of a snapshot: the one recorded by the run that committed it.
SNAPSHOT_DATA_AS_OF = "SELECT data_as_of FROM ops.ingestion_runs WHERE run_id = %(snapshot)s"
THROUGHPUT_DAYS = 30
AS_OF = "%(data_as_of)s::timestamp"
# Started by data_as_of (a plausible start: no age from a typing slip) and not finished by it.
IN_PROGRESS = (
    f"{plausible('f.fase_of_inicio')} AND f.fase_of_inicio <= {AS_OF} "
    f"AND (f.fase_of_fim IS NULL OR f.fase_of_fim > {AS_OF})"
)
AGE = f"extract(epoch FROM {AS_OF} - f.fase_of_inicio)"


@dataclass(frozen=True)
class CurrentLayer:
    """One current layer, declared once: its asset, refresh, counts and watermark come from here."""

    table: str
    description: str  # what a row holds: the asset's description
    reads: tuple[str, ...]  # the layer tables it reads: its upstream
    refresh: str  # replaces the table's rows, with %(data_as_of)s bound
    counts: str  # one row of named figures about the refreshed table (the asset's metadata)

    @property
    def name(self) -> str:
        return self.table.split(".")[1]


WIP = CurrentLayer(
    "analytics.agg_wip_current",
    "Open phases by phase and product: n_open_phases, n_orders, mean/p90/max age in seconds since the phase started.",
    ("derived.fases_ordem_fabrico", "core.ordens_fabrico"),
    f"""DELETE FROM analytics.agg_wip_current;
        INSERT INTO analytics.agg_wip_current
        SELECT f.fase_of_fase_id, o.of_produto_id, count(*), count(DISTINCT f.fase_of_of_id),
               avg({AGE}), percentile_cont(0.9) WITHIN GROUP (ORDER BY {AGE}), max({AGE}), now()
        FROM core.fases_ordem_fabrico f JOIN core.ordens_fabrico o ON o.of_id = f.fase_of_of_id
        WHERE f.fase_of_fim IS NULL AND {plausible("f.fase_of_inicio")}  -- no age from a typing slip
        GROUP BY 1, 2""",
    """SELECT (SELECT count(*) FROM analytics.agg_wip_current) AS groups,
              (SELECT coalesce(sum(n_open_phases), 0)::bigint FROM analytics.agg_wip_current) AS open_phases,
              (SELECT count(*) FROM core.fases_ordem_fabrico f WHERE f.fase_of_fim IS NULL AND NOT EXISTS
                  (SELECT 1 FROM core.ordens_fabrico o WHERE o.of_id = f.fase_of_of_id))
                  AS open_phases_missing_order""",
)
PHASE_FLOW = CurrentLayer(
    "analytics.phase_flow_current",
    f"Per phase: wip (phase rows started by data_as_of and not finished by it), finished_{THROUGHPUT_DAYS}d "
    f"(finished in (data_as_of - {THROUGHPUT_DAYS} days, data_as_of]), throughput_per_day = finished / "
    f"{THROUGHPUT_DAYS}, expected_wait_days = wip / throughput_per_day (Little's law; NULL when nothing "
    "finished) and p90_wip_age_seconds.",
    ("derived.fases_ordem_fabrico", "core.fases_catalogo"),
    f"""DELETE FROM analytics.phase_flow_current;
        INSERT INTO analytics.phase_flow_current
        SELECT p.fase_id, c.fase_nome, p.wip, p.finished, p.finished / {THROUGHPUT_DAYS}.0,
               CASE WHEN p.finished > 0 THEN p.wip / (p.finished / {THROUGHPUT_DAYS}.0) END, p.p90_age,
               {AS_OF}
        FROM (SELECT f.fase_of_fase_id AS fase_id, count(*) FILTER (WHERE {IN_PROGRESS}) AS wip,
                     count(*) FILTER (WHERE f.fase_of_fim > {AS_OF} - interval '{THROUGHPUT_DAYS} days'
                                        AND f.fase_of_fim <= {AS_OF}) AS finished,
                     percentile_cont(0.9) WITHIN GROUP (ORDER BY {AGE}) FILTER (WHERE {IN_PROGRESS}) AS p90_age
              FROM core.fases_ordem_fabrico f
              WHERE f.fase_of_fim IS NULL OR f.fase_of_fim > {AS_OF} - interval '{THROUGHPUT_DAYS} days'
              GROUP BY 1) p
        LEFT JOIN core.fases_catalogo c ON c.fase_id = p.fase_id
        WHERE p.wip > 0 OR p.finished > 0""",
    """SELECT count(*) AS phases, coalesce(sum(wip), 0)::bigint AS wip,
              coalesce(sum(finished_30d), 0)::bigint AS finished_30d
       FROM analytics.phase_flow_current""",
)
DEFECT_PARETO = CurrentLayer(
    "analytics.defect_pareto_current",
    "Defects counted by day of ofch_event_time, description, culprit phase (the phase of the phase "
    "row Erro_FaseOfCulpada names) and product (the order's): a key that is unknown says why "
    "(no_culprit_given, culprit_phase_row_missing, order_missing).",
    ("derived.erros_ordem_fabrico", "derived.fases_ordem_fabrico", "core.ordens_fabrico"),
    """DELETE FROM analytics.defect_pareto_current;
       INSERT INTO analytics.defect_pareto_current
       SELECT e.ofch_event_time::date, e.erro_descricao, cf.fase_of_fase_id,
              CASE WHEN e.erro_fase_of_culpada IS NULL THEN 'no_culprit_given'
                   WHEN cf.fase_of_id IS NULL THEN 'culprit_phase_row_missing' END,
              o.of_produto_id, CASE WHEN o.of_id IS NULL THEN 'order_missing' END, count(*)
       FROM core.erros_ordem_fabrico e
       LEFT JOIN core.fases_ordem_fabrico cf ON cf.fase_of_id = e.erro_fase_of_culpada
       LEFT JOIN core.ordens_fabrico o ON o.of_id = e.erro_of_id
       GROUP BY 1, 2, 3, 4, 5, 6""",
    """SELECT coalesce(sum(n), 0)::bigint AS defects,
              coalesce(sum(n) FILTER (WHERE culprit_unknown IS NOT NULL), 0)::bigint AS culprit_unknown,
              coalesce(sum(n) FILTER (WHERE product_unknown IS NOT NULL), 0)::bigint AS product_unknown,
              coalesce(sum(n) FILTER (WHERE day IS NULL), 0)::bigint AS without_day
       FROM analytics.defect_pareto_current""",
)
ORDERS_AT_RISK = CurrentLayer(
    "analytics.orders_at_risk_current",
    "Open orders with a due date (Of_DataTransporte): the remaining phases (the product's standard-route "
    "phases with no finished phase row in the order), their expected seconds (median duration of finished "
    "phases of that product and phase over the year up to data_as_of, else of that phase over all "
    "products), eta = data_as_of + their sum, slack_seconds = due - eta, risk_rank (1 = least slack); "
    "or why the order could not be assessed (no_route, no_duration_history, due_date_implausible).",
    ("derived.fases_ordem_fabrico", "derived.ordens_fabrico", "core.fases_standard_modelos"),
    f"""DELETE FROM analytics.orders_at_risk_current;
        INSERT INTO analytics.orders_at_risk_current
        WITH open_orders AS (
            SELECT of_id, of_produto_id, of_data_transporte FROM core.ordens_fabrico
            WHERE of_data_acabamento IS NULL AND of_data_transporte IS NOT NULL),
        history AS (
            SELECT f.fase_of_of_id, f.fase_of_fase_id, f.duration_seconds FROM core.fases_ordem_fabrico f
            WHERE f.duration_seconds IS NOT NULL
              AND f.fase_of_fim > {AS_OF} - interval '1 year' AND f.fase_of_fim <= {AS_OF}),
        of_product AS (
            SELECT o.of_produto_id, h.fase_of_fase_id,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY h.duration_seconds) AS median
            FROM history h JOIN core.ordens_fabrico o ON o.of_id = h.fase_of_of_id GROUP BY 1, 2),
        of_phase AS (
            SELECT fase_of_fase_id, percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_seconds) AS median
            FROM history GROUP BY 1),
        remaining AS (
            SELECT DISTINCT oo.of_id, r.produto_fase_fase_id AS fase_id
            FROM open_orders oo JOIN core.fases_standard_modelos r ON r.produto_fase_produto_id = oo.of_produto_id
            WHERE NOT EXISTS (SELECT 1 FROM core.fases_ordem_fabrico f WHERE f.fase_of_of_id = oo.of_id
                              AND f.fase_of_fase_id = r.produto_fase_fase_id AND f.fase_of_fim IS NOT NULL)),
        expected AS (
            SELECT m.of_id, count(*) AS phases, count(*) FILTER (WHERE e.seconds IS NULL) AS without_history,
                   sum(e.seconds) AS seconds
            FROM remaining m JOIN open_orders oo USING (of_id)
            LEFT JOIN of_product p ON p.of_produto_id = oo.of_produto_id AND p.fase_of_fase_id = m.fase_id
            LEFT JOIN of_phase a ON a.fase_of_fase_id = m.fase_id
            CROSS JOIN LATERAL (SELECT coalesce(p.median, a.median) AS seconds) e
            GROUP BY 1),
        assessed AS (
            SELECT oo.*, CASE
                       WHEN NOT {plausible("oo.of_data_transporte")} THEN 'due_date_implausible'
                       WHEN NOT EXISTS (SELECT 1 FROM core.fases_standard_modelos r
                                        WHERE r.produto_fase_produto_id = oo.of_produto_id) THEN 'no_route'
                       WHEN coalesce(x.without_history, 0) > 0 THEN 'no_duration_history' END AS reason,
                   coalesce(x.phases, 0) AS phases, coalesce(x.seconds, 0) AS seconds
            FROM open_orders oo LEFT JOIN expected x USING (of_id))
        SELECT of_id, of_produto_id, of_data_transporte, reason,
               CASE WHEN reason IS NULL THEN phases END, CASE WHEN reason IS NULL THEN seconds END,
               CASE WHEN reason IS NULL THEN {AS_OF} + seconds * interval '1 second' END,
               CASE WHEN reason IS NULL THEN
                   extract(epoch FROM of_data_transporte - ({AS_OF} + seconds * interval '1 second')) END,
               CASE WHEN reason IS NULL THEN row_number() OVER (
                   PARTITION BY reason IS NULL ORDER BY
                   extract(epoch FROM of_data_transporte - ({AS_OF} + seconds * interval '1 second')), of_id) END,
               {AS_OF}
        FROM assessed WHERE {AS_OF} IS NOT NULL""",
    """SELECT count(*) AS open_orders_with_due_date, count(*) FILTER (WHERE unassessed_reason IS NULL) AS assessed,
              count(*) FILTER (WHERE slack_seconds < 0) AS late_by_eta
       FROM analytics.orders_at_risk_current""",
)
CURRENT_LAYERS = {layer.table: layer for layer in (WIP, PHASE_FLOW, DEFECT_PARETO, ORDERS_AT_RISK)}


def snapshot_data_as_of(conn, snapshot: int) -> datetime | None:
    with conn.cursor() as cur:
        cur.execute(SNAPSHOT_DATA_AS_OF, {"snapshot": snapshot})
        row = cur.fetchone()
    return row[0] if row else None


def refresh_current(conn, layer: CurrentLayer, data_as_of: datetime | None) -> dict:
    """Replace the layer's rows as of ``data_as_of`` (None: a snapshot without phases; the
    layer is emptied of as-of figures), in the caller's transaction; its counts."""
    started = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(layer.refresh, {"data_as_of": data_as_of})
        cur.execute(layer.counts)
        counts = dict(zip((d.name for d in cur.description), cur.fetchone(), strict=True))
    return {**{k: int(v) for k, v in counts.items()}, "seconds": round(time.perf_counter() - started, 3)}
