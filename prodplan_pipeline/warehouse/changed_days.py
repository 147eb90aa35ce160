"""The statements that record changed days in ``ops.changed_days``: the days whose facts a
snapshot (or the backfill after it) changed, which the daily aggregates' convergence follows.

Each writer (a sheet's merge, the orders' dependent days, the defects' backfill) only says which
(kind, day) rows it changed, as a SELECT; how they are recorded is decided here, once. The
phase statistics' changed groups (``ops.changed_phase_groups``) are recorded the same way.
"""

from __future__ import annotations

_RECORD = """
    INSERT INTO ops.changed_days (run_id, kind, day)
    SELECT DISTINCT %(run_id)s::bigint, recorded.kind, recorded.day FROM ({days}) recorded(kind, day)
    WHERE recorded.day IS NOT NULL AND %(run_id)s IS NOT NULL
    ON CONFLICT DO NOTHING"""


def record_changed_days(days: str, *, returning: bool = False) -> str:
    """The statement recording, for run ``%(run_id)s``, the (kind, day) rows that the SELECT
    ``days`` yields; a NULL day or a NULL run records nothing. ``returning``: one row per day
    recorded (for a count inside a WITH)."""
    return _RECORD.replace("{days}", days) + (" RETURNING 1" if returning else "")


_RECORD_PHASE_GROUPS = """
    INSERT INTO ops.changed_phase_groups (run_id, day, produto_id, fase_id)
    SELECT DISTINCT %(run_id)s::bigint, recorded.day, recorded.produto_id, recorded.fase_id
    FROM ({groups}) recorded(day, produto_id, fase_id)
    WHERE recorded.day IS NOT NULL AND recorded.produto_id IS NOT NULL AND %(run_id)s IS NOT NULL
    ON CONFLICT DO NOTHING"""
# A first load records no group (every group is new): its run says so, and a refresh that
# catches up with it recomputes whole days.
NO_PHASE_GROUPS = "UPDATE ops.ingestion_runs SET phase_groups = false WHERE run_id = %(run_id)s"


def record_changed_phase_groups(groups: str) -> str:
    """The statement recording, for run ``%(run_id)s``, the phase statistics' (day, product,
    phase) groups that the SELECT ``groups`` yields (a NULL day or product records nothing)."""
    return _RECORD_PHASE_GROUPS.replace("{groups}", groups)
