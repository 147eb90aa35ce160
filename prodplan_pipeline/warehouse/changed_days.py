"""The one statement that records changed days in ``ops.changed_days``: the days whose facts a
snapshot (or the backfill after it) changed, which the daily aggregates' convergence follows.

Each writer (a sheet's merge, the orders' dependent days, the defects' backfill) only says which
(kind, day) rows it changed, as a SELECT; how they are recorded is decided here, once.
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
