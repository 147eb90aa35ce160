"""Derived columns, computed in PostgreSQL, set-based.

The merge computes the values that come from the row itself (``PHASE_DERIVED``,
``ORDER_DERIVED``) and the snapshot's commit derives the defects' times, so committed rows are
never waiting for this module. What it adds is verification and repair: every statement writes
only rows whose derived values differ from what they should be, so a re-run (and a normal run)
writes nothing. For the phases, an incremental run looks only at rows with ``is_open`` NULL;
``full=True`` recomputes every row (and moves any row whose ``event_time`` was wrong into its
right monthly partition).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prodplan_pipeline.contract import plausible

# Values computed from the row itself: the merge writes them with every row it writes (so a
# committed row is never waiting for them), and the backfill below checks or recomputes them.
PHASE_DERIVED = {
    "event_time": "coalesce(fase_of_fim, fase_of_inicio)",  # the partition key: always set
    "duration_seconds": f"CASE WHEN fase_of_fim >= fase_of_inicio AND {plausible('fase_of_inicio')} "
                        f"AND {plausible('fase_of_fim')} "
                        "THEN extract(epoch FROM fase_of_fim - fase_of_inicio)::double precision END",
    "is_open": "fase_of_fim IS NULL",
    "is_done": "fase_of_fim IS NOT NULL",
}
ORDER_DERIVED = {
    "lead_time_seconds": f"CASE WHEN of_data_acabamento >= of_data_criacao AND {plausible('of_data_criacao')} "
                         f"AND {plausible('of_data_acabamento')} THEN extract(epoch FROM "
                         "of_data_acabamento - of_data_criacao)::double precision END",
    # on time: finished by the end of the shipping (due) day
    "is_on_time": f"CASE WHEN {plausible('of_data_acabamento')} AND {plausible('of_data_transporte')} "
                  "THEN of_data_acabamento < date_trunc('day', of_data_transporte) + interval '1 day' END",
}


def _recompute(table: str, derived: dict[str, str], where: str = "true") -> str:
    names, values = ", ".join(derived), ", ".join(derived.values())
    return (f"UPDATE {table} SET ({names}) = ({values}) "
            f"WHERE {where} AND ({names}) IS DISTINCT FROM ({values})")


BACKFILL_PHASES = _recompute("core.fases_ordem_fabrico", PHASE_DERIVED, "(%(full)s OR is_open IS NULL)")
PHASE_NULLS = """
    SELECT count(*) FILTER (WHERE duration_seconds IS NOT NULL),
           count(*) FILTER (WHERE fase_of_fim IS NULL),
           count(*) FILTER (WHERE fase_of_fim < fase_of_inicio)
    FROM core.fases_ordem_fabrico"""

BACKFILL_ORDERS = _recompute("core.ordens_fabrico", ORDER_DERIVED)
ORDER_NULLS = """
    SELECT count(*) FILTER (WHERE lead_time_seconds IS NOT NULL),
           count(*) FILTER (WHERE of_data_acabamento IS NULL),
           count(*) FILTER (WHERE of_data_acabamento < of_data_criacao),
           count(*) FILTER (WHERE is_on_time IS NOT NULL),
           count(*) FILTER (WHERE of_data_acabamento IS NOT NULL AND of_data_transporte IS NULL)
    FROM core.ordens_fabrico"""

# A defect happened when its inspection phase row happened; without that row, when its order
# finished, else when the order was created; NULL only when the order itself is unknown.
# (fase_of_id is unique in core: the merge keeps it so across partitions.) The merge writes it
# with each new defect row (the phases and orders of the snapshot are merged first); the
# backfill rewrites a defect whose phase row or order changed since.
DEFECT_TIME = (f"coalesce(CASE WHEN {plausible('i.event_time')} THEN i.event_time END, "
               f"CASE WHEN {plausible('o.of_data_acabamento')} THEN o.of_data_acabamento END, "
               f"CASE WHEN {plausible('o.of_data_criacao')} THEN o.of_data_criacao END)")


def defect_sources(defects: str) -> str:
    """The joins DEFECT_TIME reads, for the defect rows aliased ``defects``."""
    return (f"LEFT JOIN core.fases_ordem_fabrico i ON i.fase_of_id = {defects}.erro_fase_of_avaliacao "
            f"LEFT JOIN core.ordens_fabrico o ON o.of_id = {defects}.erro_of_id")


BACKFILL_DEFECTS = f"""
    WITH computed AS (
        SELECT e.row_fingerprint, e.occurrence, e.ofch_event_time AS old_time, {DEFECT_TIME} AS new_time
        FROM core.erros_ordem_fabrico e {defect_sources('e')}),
    changed AS (SELECT * FROM computed WHERE old_time IS DISTINCT FROM new_time),
    updated AS (
        UPDATE core.erros_ordem_fabrico e SET ofch_event_time = c.new_time
        FROM changed c WHERE (e.row_fingerprint, e.occurrence) = (c.row_fingerprint, c.occurrence)
        RETURNING 1),
    -- A defect whose time moved changes the quality aggregate of its old and its new day.
    days AS (
        INSERT INTO ops.changed_days (run_id, kind, day)
        SELECT DISTINCT %(run_id)s::bigint, 'defect', v.day
        FROM changed, LATERAL (VALUES (old_time::date), (new_time::date)) v(day)
        WHERE %(run_id)s IS NOT NULL AND v.day IS NOT NULL
        ON CONFLICT DO NOTHING RETURNING 1)
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


def backfill_defects(conn, run_id: int | None = None) -> BackfillReport:
    """Defect times from their inspection phase (a cross-table value). With ``run_id`` (the
    snapshot's commit) the days whose defects moved are recorded as that snapshot's changes."""
    started = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(BACKFILL_DEFECTS, {"run_id": run_id})
        written = cur.fetchone()[0]
    phase, finished, created, missing = _one(conn, DEFECT_SOURCES)
    return BackfillReport("core.erros_ordem_fabrico", written, time.perf_counter() - started, {
        "time_from_inspection_phase": phase, "time_from_order_finish": finished,
        "time_from_order_creation": created, "time_null_order_missing": missing})
