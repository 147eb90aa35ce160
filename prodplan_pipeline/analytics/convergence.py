"""The analytics layer converges to the latest snapshot from durable records, never from one
run's delta: whatever refresh was killed, failed or skipped, the next one finds the work.

- ``ops.changed_days``: the days each committed snapshot changed (written in its commit).
- ``ops.aggregate_days``: the snapshot each day of each daily aggregate reflects.
- ``ops.watermarks``: per layer (each aggregate, each current layer, the views) the snapshot it
  reflects; a current layer is computed as of that snapshot's recorded ``data_as_of``.

A day is pending for an aggregate when a snapshot later than the one the day reflects changed
it. Every refresh reads the latest snapshot *before* it reads core and records that one, so a
snapshot that commits during a refresh is never marked as reflected (at worst a day is
refreshed twice). A transaction-level advisory lock serialises refreshes of one aggregate, so
two runs replacing the same days never interleave their deletes and inserts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from prodplan_pipeline import watermarks
from prodplan_pipeline.analytics.aggregates import AGGREGATES, RefreshReport, refresh
from prodplan_pipeline.analytics.current import CURRENT_LAYERS, WIP, refresh_current, snapshot_data_as_of
from prodplan_pipeline.analytics.views import refresh_views
from prodplan_pipeline.quality.gates import WATERMARK as GATES_WATERMARK
from prodplan_pipeline.warehouse.cache_version import bump_cache_version
from prodplan_pipeline.warehouse.locks import lock_key

WIP_LAYER = WIP.table
VIEWS_LAYER = "analytics.materialized_views"
LAYERS = (*AGGREGATES, *CURRENT_LAYERS, VIEWS_LAYER)  # the analytics layers, each with its watermark
# The watermarks ops.snapshot_labels reads: an API answer is labelled with a snapshot when every
# analytics layer reflects it and so do the feature gates (its gated answers read them).
LABELLED = (*LAYERS, GATES_WATERMARK)

# Each aggregate follows only the days of its own kind: a snapshot that changed phases leaves the
# orders' aggregate as it was.
# The changes (ops.changed_days rows) in [first, end) that an aggregate does not reflect yet: a
# day's change by a snapshot after the one its refresh reflects, up to %(snapshot)s.
PENDING_CHANGES = """
    FROM unnest(%(aggregates)s::text[], %(kinds)s::text[]) a(name, kind)
    JOIN ops.changed_days c ON c.kind = a.kind
    LEFT JOIN ops.aggregate_days r ON r.aggregate = a.name AND r.day = c.day
    WHERE c.run_id > coalesce(r.snapshot_run_id, 0) AND c.run_id <= %(snapshot)s
      AND c.day >= %(first)s AND c.day < %(end)s"""
PENDING_DAYS = f"SELECT DISTINCT c.day {PENDING_CHANGES} ORDER BY 1"
# The snapshots behind those changes.
PENDING_RUNS = f"SELECT DISTINCT c.run_id {PENDING_CHANGES} ORDER BY 1"
RECORDED_GROUPS = "SELECT coalesce(bool_and(phase_groups), false) FROM ops.ingestion_runs WHERE run_id = ANY (%s)"
MARK_REFLECTED = """
    INSERT INTO ops.aggregate_days AS r (aggregate, day, snapshot_run_id)
    SELECT %(aggregate)s, d::date, %(snapshot)s
    FROM generate_series(%(start)s::date, %(end)s::date - 1, interval '1 day') d
    ON CONFLICT (aggregate, day) DO UPDATE
    SET snapshot_run_id = greatest(r.snapshot_run_id, EXCLUDED.snapshot_run_id), refreshed_at = now()"""
CHANGED_OUTSIDE = """
    SELECT DISTINCT day FROM ops.changed_days WHERE day < %(first)s OR day >= %(end)s ORDER BY 1"""
LEAST_WATERMARK = """
    SELECT min(coalesce(w.value::bigint, 0)) FROM unnest(%(names)s::text[]) n(name)
    LEFT JOIN ops.watermarks w ON w.name = n.name"""


# A convergence makes at most this many refresh runs (each costs a few seconds to start, more
# under the daemon): beyond it, the ranges separated by the smallest gaps are merged, recomputing
# some unchanged days (harmless: a day's rows are replaced by the same rows).
MAX_REFRESH_RUNS = 8
# When merging down to MAX_REFRESH_RUNS still covers this share of the span from the first to
# the last day, one run over the span recomputes few more days and saves the other runs'
# start-up and bookkeeping (1% of the phase rows changed, spread over six years: 8 runs
# covering ~2,000 of 2,172 days).
ONE_RUN_SHARE = 0.5


def daily_window(partitions_start: date) -> tuple[date, date]:
    """The first day of the daily partitions and the day after the last (exclusive end): the
    partitions end with today's, in UTC (Dagster's DAILY has end_offset=1; test_definitions
    holds the two equal)."""
    return partitions_start, datetime.now(UTC).date() + timedelta(days=1)


def contiguous_ranges(days) -> list[tuple[date, date]]:
    """Sorted days grouped into runs of consecutive days: [(first, last), ...] (inclusive)."""
    ranges: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if ranges and day == ranges[-1][1] + timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def refresh_ranges(days, max_runs: int = MAX_REFRESH_RUNS) -> list[tuple[date, date]]:
    """Consecutive days as ranges, at most ``max_runs`` of them (smallest gaps merged first;
    one range when the merged ones cover most of the span anyway)."""
    ranges = contiguous_ranges(days)
    if len(ranges) <= max_runs:
        return ranges  # exactly the days
    while len(ranges) > max_runs:
        gaps = [(ranges[i + 1][0] - ranges[i][1], i) for i in range(len(ranges) - 1)]
        _, i = min(gaps)
        ranges[i : i + 2] = [(ranges[i][0], ranges[i + 1][1])]
    span = (ranges[-1][1] - ranges[0][0]).days + 1
    if sum((last - first).days + 1 for first, last in ranges) >= ONE_RUN_SHARE * span:
        return [(ranges[0][0], ranges[-1][1])]
    return ranges


def latest_snapshot(conn) -> int:
    """The last ingestion run whose commit changed core (0: none yet)."""
    return watermarks.last_core_change(conn)


def pending_days(
    conn, first: date, end: date, snapshot: int | None = None, aggregates: tuple[str, ...] = tuple(AGGREGATES)
) -> list[date]:
    """Days in [first, end) that some aggregate does not reflect yet (up to ``snapshot``)."""
    snapshot = latest_snapshot(conn) if snapshot is None else snapshot
    with conn.cursor() as cur:
        cur.execute(
            PENDING_DAYS,
            {
                "aggregates": list(aggregates),
                "snapshot": snapshot,
                "kinds": [AGGREGATES[a].changed_day_kind for a in aggregates],
                "first": first,
                "end": end,
            },
        )
        return [day for (day,) in cur.fetchall()]


def ever_refreshed(conn) -> bool:
    """Whether any aggregate day was ever refreshed (false before the first load)."""
    with conn.cursor() as cur:
        cur.execute("SELECT EXISTS (SELECT 1 FROM ops.aggregate_days)")
        return cur.fetchone()[0]


@dataclass(frozen=True)
class RefreshRange:
    """One refresh run: days ``first``..``last`` (inclusive) of ``aggregates`` (table names)."""

    first: date
    last: date
    aggregates: tuple[str, ...]

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def every_aggregate(self) -> bool:
        return set(self.aggregates) == set(AGGREGATES)


def refresh_plan(conn, first: date, last_end: date, snapshot: int | None = None) -> list[RefreshRange]:
    """The refresh runs: the contiguous ranges of pending days, at most MAX_REFRESH_RUNS (the
    closest merged: recomputing an unchanged day replaces its rows by the same rows), each for
    the aggregates with a pending day in it. A first load is one single-run backfill of every
    aggregate from the partitions' start, so every day up to the last with data is recorded
    as materialized."""
    snapshot = latest_snapshot(conn) if snapshot is None else snapshot
    by_aggregate = {table: pending_days(conn, first, last_end, snapshot, (table,)) for table in AGGREGATES}
    days = sorted(set().union(*by_aggregate.values()))
    if days and not ever_refreshed(conn):
        return [RefreshRange(first, max(days), tuple(AGGREGATES))]
    return [
        RefreshRange(
            start, last, tuple(t for t, pending in by_aggregate.items() if any(start <= d <= last for d in pending))
        )
        for start, last in refresh_ranges(days)
    ]


@dataclass(frozen=True)
class PendingWork:
    """What the durable records say is left to do for the latest snapshot."""

    snapshot: int
    ranges: list[RefreshRange]  # one refresh run each
    lagging: list[str]  # layers whose watermark is behind the snapshot
    outside: list[date]  # changed days outside the partitions: never aggregated, reported

    @property
    def refreshes(self) -> list[RefreshRange | None]:
        """The refresh runs to make, for the CLI and the sensor alike: one per range (each
        refreshes the current layers and the views after its days), else, when only a current
        layer, the views or a watermark lag, one run of those alone (None)."""
        return list(self.ranges) or ([None] if self.lagging else [])

    def outside_note(self) -> str | None:
        if not self.outside:
            return None
        return (
            f"{len(self.outside)} changed day(s) outside the daily partitions "
            f"({self.outside[0]} .. {self.outside[-1]}) are not aggregated"
        )


def pending_work(conn, first: date, last_end: date) -> PendingWork:
    snapshot = latest_snapshot(conn)
    with conn.cursor() as cur:
        cur.execute(CHANGED_OUTSIDE, {"first": first, "end": last_end})
        outside = [day for (day,) in cur.fetchall()]
    return PendingWork(snapshot, refresh_plan(conn, first, last_end, snapshot), lagging_layers(conn, snapshot), outside)


def lagging_layers(conn, snapshot: int | None = None) -> list[str]:
    """The layers whose watermark is behind the latest snapshot."""
    snapshot = latest_snapshot(conn) if snapshot is None else snapshot
    return [name for name in LAYERS if _watermark(conn, [name]) < snapshot]


def refresh_days(conn, table: str, start: date, end: date, first: date, last_end: date) -> RefreshReport:
    """Replace ``table``'s days [start, end) and record the snapshot they now reflect; advance the
    layer's watermark when no day in the partitions [first, last_end) is left pending."""
    _serialise(conn, table)
    snapshot = latest_snapshot(conn)
    report = refresh(conn, AGGREGATES[table], start, end, _group_runs(conn, table, start, end, snapshot))
    with conn.cursor() as cur:
        cur.execute(MARK_REFLECTED, {"aggregate": table, "snapshot": snapshot, "start": start, "end": end})
    if not pending_days(conn, first, last_end, snapshot, (table,)):
        watermarks.advance(conn, table, snapshot)
    return report


def _group_runs(conn, table: str, start: date, end: date, snapshot: int) -> list[int] | None:
    """The snapshots whose recorded groups are all the range [start, end) must recompute: None
    when the aggregate has no groups, when nothing is pending (a refresh asked for by hand
    recomputes whole days), or when one of them recorded no groups (a first load, an older run)."""
    aggregate = AGGREGATES[table]
    if not aggregate.changed_groups:
        return None
    with conn.cursor() as cur:
        cur.execute(
            PENDING_RUNS,
            {
                "aggregates": [table],
                "kinds": [aggregate.changed_day_kind],
                "snapshot": snapshot,
                "first": start,
                "end": end,
            },
        )
        runs = [run for (run,) in cur.fetchall()]
        if not runs:
            return None
        cur.execute(RECORDED_GROUPS, (runs,))
        return runs if cur.fetchone()[0] else None


def refresh_current_layer(conn, table: str) -> dict:
    """Replace a current layer as of the latest snapshot's data_as_of and record that snapshot;
    its counts and the data_as_of used."""
    _serialise(conn, table)
    snapshot = latest_snapshot(conn)
    data_as_of = snapshot_data_as_of(conn, snapshot)
    counts = refresh_current(conn, CURRENT_LAYERS[table], data_as_of)
    watermarks.advance(conn, table, snapshot)
    return {**counts, "data_as_of": data_as_of}


def settle(conn, first: date, last_end: date, snapshot: int | None = None) -> None:
    """Advance each aggregate whose days in the partitions [first, last_end) are all caught up
    (a snapshot that changed no day of it, e.g. only the employees, leaves nothing to refresh)."""
    snapshot = latest_snapshot(conn) if snapshot is None else snapshot
    for table in AGGREGATES:
        if not pending_days(conn, first, last_end, snapshot, (table,)):
            watermarks.advance(conn, table, snapshot)


def refresh_views_layer(conn, first: date, last_end: date) -> dict[str, float]:
    """The views read the aggregates and WIP: they reflect no more than those do."""
    _serialise(conn, VIEWS_LAYER)
    settle(conn, first, last_end)
    snapshot = min(latest_snapshot(conn), _watermark(conn, [*AGGREGATES, WIP_LAYER]))
    seconds = refresh_views(conn)
    watermarks.advance(conn, VIEWS_LAYER, snapshot)
    return seconds


def refresh_everything(conn, ranges: list[tuple[date, date]], first: date, last_end: date) -> list[RefreshReport]:
    """Every aggregate over the day ranges (inclusive), the current layers and the views, in the
    caller's transaction; the cache version is bumped with them."""
    reports = [
        refresh_days(conn, table, day_from, day_to + timedelta(days=1), first, last_end)
        for table in AGGREGATES
        for day_from, day_to in ranges
    ]
    for table in CURRENT_LAYERS:
        refresh_current_layer(conn, table)
    refresh_views_layer(conn, first, last_end)
    bump_cache_version(conn)
    return reports


def _watermark(conn, names: list[str]) -> int:
    with conn.cursor() as cur:
        cur.execute(LEAST_WATERMARK, {"names": names})
        return cur.fetchone()[0] or 0


def _serialise(conn, layer: str) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(f"prodplan.refresh.{layer}"),))
