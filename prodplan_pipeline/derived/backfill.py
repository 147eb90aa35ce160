"""Derived columns, computed in PostgreSQL, set-based.

The merge computes every derived column with the row it writes (the contract's
``DerivedColumn.sql``), so committed rows are never waiting for this module. What it adds is
verification and repair: every statement writes only rows whose derived values differ from what
they should be, so a re-run (and a normal run) writes nothing. For the phases, an incremental run
looks only at rows with ``is_open`` NULL;
``full=True`` recomputes every row (and moves any row whose ``event_time`` was wrong into its
right monthly partition).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prodplan_pipeline.contract import sheet
from prodplan_pipeline.warehouse.changed_days import record_changed_days

PHASES, ORDERS, DEFECTS = (sheet(n) for n in ("FasesOrdemFabrico", "OrdensFabrico", "OrdemFabricoErros"))


def _recompute(table: str, derived: dict[str, str], where: str = "true") -> str:
    names, values = ", ".join(derived), ", ".join(derived.values())
    return f"UPDATE {table} SET ({names}) = ({values}) WHERE {where} AND ({names}) IS DISTINCT FROM ({values})"


BACKFILL_PHASES = _recompute(PHASES.core_table, PHASES.computed, "(%(full)s OR is_open IS NULL)")
PHASE_NULLS = """
    SELECT count(*) FILTER (WHERE duration_seconds IS NOT NULL),
           count(*) FILTER (WHERE fase_of_fim IS NULL),
           count(*) FILTER (WHERE fase_of_fim < fase_of_inicio)
    FROM core.fases_ordem_fabrico"""

BACKFILL_ORDERS = _recompute(ORDERS.core_table, ORDERS.computed)
ORDER_NULLS = """
    SELECT count(*) FILTER (WHERE lead_time_seconds IS NOT NULL),
           count(*) FILTER (WHERE of_data_acabamento IS NULL),
           count(*) FILTER (WHERE of_data_acabamento < of_data_criacao),
           count(*) FILTER (WHERE is_on_time IS NOT NULL),
           count(*) FILTER (WHERE of_data_acabamento IS NOT NULL AND of_data_transporte IS NULL)
    FROM core.ordens_fabrico"""

# The backfill rewrites a defect whose inspection phase row or order changed since its merge.
BACKFILL_DEFECTS = f"""
    WITH computed AS (
        SELECT e.row_fingerprint, e.occurrence, e.ofch_event_time AS old_time,
               {DEFECTS.computed["ofch_event_time"]} AS new_time
        FROM core.erros_ordem_fabrico e {DEFECTS.joins_for("e")}),
    changed AS (SELECT * FROM computed WHERE old_time IS DISTINCT FROM new_time),
    updated AS (
        UPDATE core.erros_ordem_fabrico e SET ofch_event_time = c.new_time
        FROM changed c WHERE (e.row_fingerprint, e.occurrence) = (c.row_fingerprint, c.occurrence)
        RETURNING 1),
    -- A defect whose time moved changes the quality aggregate of its old and its new day.
    days AS ({
    record_changed_days(
        "SELECT 'defect', v.day FROM changed, LATERAL (VALUES (old_time::date), (new_time::date)) v(day)",
        returning=True,
    )
})
    SELECT (SELECT count(*) FROM updated), (SELECT count(*) FROM days)"""
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
    return BackfillReport(
        "core.fases_ordem_fabrico",
        written,
        time.perf_counter() - started,
        {"duration_set": with_duration, "duration_null_open_phase": open_, "duration_null_ends_before_start": inverted},
    )


def backfill_orders(conn) -> BackfillReport:
    started = time.perf_counter()
    written = _run(conn, BACKFILL_ORDERS)
    lead, open_, inverted, on_time_set, no_due = _one(conn, ORDER_NULLS)
    return BackfillReport(
        "core.ordens_fabrico",
        written,
        time.perf_counter() - started,
        {
            "lead_time_set": lead,
            "lead_time_null_open_order": open_,
            "lead_time_null_finished_before_created": inverted,
            "on_time_set": on_time_set,
            "on_time_null_no_due_date": no_due,
            "on_time_null_open_order": open_,
        },
    )


def backfill_defects(conn, run_id: int | None = None) -> BackfillReport:
    """Defect times from their inspection phase (a cross-table value). With ``run_id`` (the
    snapshot's commit) the days whose defects moved are recorded as that snapshot's changes."""
    started = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(BACKFILL_DEFECTS, {"run_id": run_id})
        written = cur.fetchone()[0]
    phase, finished, created, missing = _one(conn, DEFECT_SOURCES)
    return BackfillReport(
        "core.erros_ordem_fabrico",
        written,
        time.perf_counter() - started,
        {
            "time_from_inspection_phase": phase,
            "time_from_order_finish": finished,
            "time_from_order_creation": created,
            "time_null_order_missing": missing,
        },
    )
