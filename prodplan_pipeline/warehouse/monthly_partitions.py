"""Monthly partitions of ``core.fases_ordem_fabrico``.

Ingestion calls :func:`ensure_partitions` for the months of the rows it is about to merge; the
monthly maintenance schedule calls :func:`maintain_partitions` to keep partitions six months
ahead and to report rows that still fall into the default partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class PartitionReport:
    created: int
    first_month: date | None
    last_month: date | None
    partitions: int
    default_rows: int


# A mistyped year (1900, 2209) must not create hundreds of empty partitions: months outside
# this window are not partitioned, and their rows stay in the default partition (reported).
EARLIEST_PARTITION = date(2000, 1, 1)
MAX_YEARS_AHEAD = 5


def ensure_partitions(conn, first_day: date | None, last_day: date | None) -> int:
    """Create the monthly partitions covering [first_day, last_day]; return how many were new."""
    if first_day is None or last_day is None:
        return 0
    first_day = max(first_day, EARLIEST_PARTITION)
    last_day = min(last_day, add_months(date.today(), 12 * MAX_YEARS_AHEAD))
    if first_day > last_day:
        return 0
    with conn.cursor() as cur:
        cur.execute("SELECT core.ensure_fases_partitions(%s, %s)", (first_day, last_day))
        return cur.fetchone()[0]


def add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def maintain_partitions(conn, months_ahead: int = 6, today: date | None = None) -> PartitionReport:
    """Partitions for every month of the data and ``months_ahead`` months past today."""
    today = today or date.today()
    with conn.cursor() as cur:
        cur.execute("SELECT min(event_time)::date, max(event_time)::date FROM core.fases_ordem_fabrico")
        data_first, data_last = cur.fetchone()
    first = min(data_first or today, today.replace(day=1))
    last = max(data_last or today, add_months(today, months_ahead))
    created = ensure_partitions(conn, first, last)
    return PartitionReport(
        created=created, first_month=first.replace(day=1), last_month=last.replace(day=1), **partition_summary(conn)
    )


def partition_summary(conn) -> dict[str, int]:
    """How many monthly partitions exist and how many rows sit in the default partition."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT count(*) FROM pg_inherits
               WHERE inhparent = 'core.fases_ordem_fabrico'::regclass
                 AND inhrelid <> 'core.fases_ordem_fabrico_default'::regclass"""
        )
        partitions = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM core.fases_ordem_fabrico_default")
        default_rows = cur.fetchone()[0]
    return {"partitions": partitions, "default_rows": default_rows}
