"""Watermarks in ``ops.watermarks``: how far a downstream computation has caught up.

A computation that depends only on the core tables records the last ingestion run that changed
core when it ran; if no run has changed core since, it has nothing new to compute. A watermark
is advanced in the same transaction as the work it describes, so it never runs ahead of it.
"""

from __future__ import annotations

from prodplan_pipeline.contract import SHEETS

LAST_CORE_CHANGE = """
    SELECT coalesce(max(run_id), 0) FROM ops.ingestion_sheet_runs
    WHERE status = 'merged' AND rows_inserted + rows_updated + rows_deleted > 0"""
READ = "SELECT value FROM ops.watermarks WHERE name = %s"
# Whether one of the sheets changed in core after the run a watermark records (or it has none).
CHANGED_SINCE = """
    SELECT NOT EXISTS (SELECT 1 FROM ops.watermarks WHERE name = %(name)s) OR EXISTS (
        SELECT 1 FROM ops.ingestion_sheet_runs r
        WHERE r.sheet = ANY (%(sheets)s) AND r.status = 'merged'
          AND r.rows_inserted + r.rows_updated + r.rows_deleted > 0
          AND r.run_id > (SELECT value::bigint FROM ops.watermarks WHERE name = %(name)s))"""
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


def changed_since(conn, name: str, tables: tuple[str, ...]) -> bool:
    """Whether an ingestion changed one of the core ``tables`` after the run watermark ``name``
    records (True when it records none: never computed)."""
    sheets = [s.name for s in SHEETS if s.core_table in tables]
    with conn.cursor() as cur:
        cur.execute(CHANGED_SINCE, {"name": name, "sheets": sheets})
        return cur.fetchone()[0]


def caught_up(conn, name: str) -> tuple[bool, int]:
    """(whether ``name`` already covers the last core change, that change's run id)."""
    change = last_core_change(conn)
    return read(conn, name) == str(change), change
