"""Watermarks in ``ops.watermarks``: how far a downstream computation has caught up.

A computation that depends only on the core tables records the last ingestion run that changed
core when it ran; if no run has changed core since, it has nothing new to compute. A watermark
is advanced in the same transaction as the work it describes, so it never runs ahead of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from prodplan_pipeline.contract import SHEETS

T = TypeVar("T")  # an issue kind, a gate: anything with a ``watermark`` and the tables it ``reads``

LAST_CORE_CHANGE = """
    SELECT coalesce(max(run_id), 0) FROM ops.ingestion_sheet_runs
    WHERE status = 'merged' AND rows_inserted + rows_updated + rows_deleted > 0"""
READ = "SELECT value FROM ops.watermarks WHERE name = %s"
# The last run that changed each sheet's core table.
LAST_CHANGE_BY_SHEET = """
    SELECT sheet, max(run_id) FROM ops.ingestion_sheet_runs
    WHERE status = 'merged' AND rows_inserted + rows_updated + rows_deleted > 0 GROUP BY sheet"""
READ_MANY = "SELECT name, value FROM ops.watermarks WHERE name = ANY (%s)"
# Never backwards: two runs that computed a layer for different snapshots may record them in
# either order (a refresh that read an older snapshot commits after one that read a newer).
ADVANCE = """
    INSERT INTO ops.watermarks AS w (name, value, updated_at) VALUES (%s, %s, now())
    ON CONFLICT (name) DO UPDATE
    SET value = greatest(w.value::bigint, EXCLUDED.value::bigint)::text, updated_at = now()"""


def last_core_change(conn) -> int:
    """The last ingestion run that inserted, updated or deleted a core row (0: none yet)."""
    with conn.cursor() as cur:
        cur.execute(LAST_CORE_CHANGE)
        return cur.fetchone()[0]


def read(conn, name: str) -> str | None:
    with conn.cursor() as cur:
        cur.execute(READ, (name,))
        row = cur.fetchone()
    return row[0] if row else None


def advance(conn, name: str, value: object) -> None:
    with conn.cursor() as cur:
        cur.execute(ADVANCE, (name, str(value)))


def stale(conn, entries: Iterable[T]) -> list[T]:
    """The entries (each with its own ``watermark`` name and the core tables it ``reads``) one of
    whose tables an ingestion changed after the run their watermark records, or that have no
    watermark yet (never computed): two queries, however many entries."""
    entries = list(entries)
    core_table = {s.name: s.core_table for s in SHEETS}
    with conn.cursor() as cur:
        cur.execute(LAST_CHANGE_BY_SHEET)
        changed = {core_table.get(sheet): run for sheet, run in cur.fetchall()}
        cur.execute(READ_MANY, ([e.watermark for e in entries],))
        recorded = {name: int(value) for name, value in cur.fetchall()}
    return [
        e
        for e in entries
        if e.watermark not in recorded or any(changed.get(table, 0) > recorded[e.watermark] for table in e.reads)
    ]


def caught_up(conn, name: str) -> tuple[bool, int]:
    """(whether ``name`` already covers the last core change, that change's run id)."""
    change = last_core_change(conn)
    return read(conn, name) == str(change), change
