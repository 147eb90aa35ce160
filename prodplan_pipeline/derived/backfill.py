"""Derived columns, computed in PostgreSQL, set-based.

Every statement writes only rows whose derived values differ from what they should be, so a
re-run writes nothing. For the phases, the merge marks the rows it wrote (``is_open`` NULL), so an
incremental run recomputes just those; ``full=True`` recomputes every row (and moves any row whose
``event_time`` was wrong into its right monthly partition). Orders and defects are small enough to
check in full every time (a defect's time also depends on other tables' rows).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

PHASE_EXPRESSIONS = """
    coalesce(fase_of_fim, fase_of_inicio),
    CASE WHEN fase_of_fim >= fase_of_inicio
         THEN extract(epoch FROM fase_of_fim - fase_of_inicio)::double precision END,
    fase_of_fim IS NULL,
    fase_of_fim IS NOT NULL"""
BACKFILL_PHASES = f"""
    UPDATE core.fases_ordem_fabrico
    SET (event_time, duration_seconds, is_open, is_done) = ({PHASE_EXPRESSIONS})
    WHERE (%(full)s OR is_open IS NULL)
      AND (event_time, duration_seconds, is_open, is_done) IS DISTINCT FROM ({PHASE_EXPRESSIONS})"""
PHASE_NULLS = """
    SELECT count(*) FILTER (WHERE duration_seconds IS NOT NULL),
           count(*) FILTER (WHERE fase_of_fim IS NULL),
           count(*) FILTER (WHERE fase_of_fim < fase_of_inicio)
    FROM core.fases_ordem_fabrico"""

BACKFILL_ORDERS = """
    WITH computed AS (
        SELECT of_id,
               CASE WHEN of_data_acabamento >= of_data_criacao
                    THEN extract(epoch FROM of_data_acabamento - of_data_criacao)::double precision
               END AS lead_time_seconds,
               -- on time: finished by the end of the shipping (due) day
               CASE WHEN of_data_acabamento IS NOT NULL AND of_data_transporte IS NOT NULL
                    THEN of_data_acabamento < date_trunc('day', of_data_transporte) + interval '1 day'
               END AS is_on_time
        FROM core.ordens_fabrico)
    UPDATE core.ordens_fabrico o SET lead_time_seconds = c.lead_time_seconds, is_on_time = c.is_on_time
    FROM computed c
    WHERE o.of_id = c.of_id
      AND (o.lead_time_seconds, o.is_on_time) IS DISTINCT FROM (c.lead_time_seconds, c.is_on_time)"""
ORDER_NULLS = """
    SELECT count(*) FILTER (WHERE lead_time_seconds IS NOT NULL),
           count(*) FILTER (WHERE of_data_acabamento IS NULL),
           count(*) FILTER (WHERE of_data_acabamento < of_data_criacao),
           count(*) FILTER (WHERE is_on_time IS NOT NULL),
           count(*) FILTER (WHERE of_data_acabamento IS NOT NULL AND of_data_transporte IS NULL)
    FROM core.ordens_fabrico"""

# A defect happened when its inspection phase row happened; without that row, when its order
# finished, else when the order was created; NULL only when the order itself is unknown.
# (fase_of_id is unique in core: the merge keeps it so across partitions.)
BACKFILL_DEFECTS = """
    WITH computed AS (
        SELECT e.row_fingerprint, e.occurrence,
               coalesce(i.event_time, o.of_data_acabamento, o.of_data_criacao) AS ofch_event_time
        FROM core.erros_ordem_fabrico e
        LEFT JOIN core.fases_ordem_fabrico i ON i.fase_of_id = e.erro_fase_of_avaliacao
        LEFT JOIN core.ordens_fabrico o ON o.of_id = e.erro_of_id)
    UPDATE core.erros_ordem_fabrico e SET ofch_event_time = c.ofch_event_time
    FROM computed c
    WHERE (e.row_fingerprint, e.occurrence) = (c.row_fingerprint, c.occurrence)
      AND e.ofch_event_time IS DISTINCT FROM c.ofch_event_time"""
DEFECT_SOURCES = """
    SELECT count(*) FILTER (WHERE f.fase_of_id IS NOT NULL),
           count(*) FILTER (WHERE f.fase_of_id IS NULL AND o.of_data_acabamento IS NOT NULL),
           count(*) FILTER (WHERE f.fase_of_id IS NULL AND o.of_id IS NOT NULL
                            AND o.of_data_acabamento IS NULL),
           count(*) FILTER (WHERE f.fase_of_id IS NULL AND o.of_id IS NULL)
    FROM core.erros_ordem_fabrico e
    LEFT JOIN core.fases_ordem_fabrico f ON f.fase_of_id = e.erro_fase_of_avaliacao
    LEFT JOIN core.ordens_fabrico o ON o.of_id = e.erro_of_id"""


@dataclass
class BackfillReport:
    table: str
    rows_written: int
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)  # rows set / left NULL, by reason


def _run(conn, statement: str, params: dict | None = None) -> int:
    with conn.cursor() as cur:
        cur.execute(statement, params or {})
        return cur.rowcount


def _one(conn, statement: str) -> tuple:
    with conn.cursor() as cur:
        cur.execute(statement)
        return cur.fetchone()


def backfill_phases(conn, full: bool = False) -> BackfillReport:
    started = time.perf_counter()
    written = _run(conn, BACKFILL_PHASES, {"full": full})
    with_duration, open_, inverted = _one(conn, PHASE_NULLS)
    return BackfillReport("core.fases_ordem_fabrico", written, time.perf_counter() - started, {
        "duration_set": with_duration, "duration_null_open_phase": open_,
        "duration_null_ends_before_start": inverted})


def backfill_orders(conn) -> BackfillReport:
    started = time.perf_counter()
    written = _run(conn, BACKFILL_ORDERS)
    lead, open_, inverted, on_time_set, no_due = _one(conn, ORDER_NULLS)
    return BackfillReport("core.ordens_fabrico", written, time.perf_counter() - started, {
        "lead_time_set": lead, "lead_time_null_open_order": open_,
        "lead_time_null_finished_before_created": inverted, "on_time_set": on_time_set,
        "on_time_null_no_due_date": no_due, "on_time_null_open_order": open_})


def backfill_defects(conn) -> BackfillReport:
    started = time.perf_counter()
    written = _run(conn, BACKFILL_DEFECTS)
    phase, finished, created, missing = _one(conn, DEFECT_SOURCES)
    return BackfillReport("core.erros_ordem_fabrico", written, time.perf_counter() - started, {
        "time_from_inspection_phase": phase, "time_from_order_finish": finished,
        "time_from_order_creation": created, "time_null_order_missing": missing})
