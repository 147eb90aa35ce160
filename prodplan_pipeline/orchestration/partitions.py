"""The daily partitions of the analytics layer, and the names of the jobs sensors target."""

from datetime import date, timedelta

from dagster import DailyPartitionsDefinition

from prodplan_pipeline.settings import Settings

# Configurable so a deployment with older history can start earlier (PRODPLAN_PARTITIONS_START).
PARTITIONS_START = Settings.from_env().partitions_start.isoformat()
DAILY = DailyPartitionsDefinition(start_date=PARTITIONS_START, end_offset=1)

INGEST_JOB = "ingest_workbook"
DAILY_REFRESH_JOB = "refresh_daily_aggregates"

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


# A convergence makes at most this many refresh runs (each costs a few seconds to start, more
# under the daemon): beyond it, the ranges separated by the smallest gaps are merged, recomputing
# some unchanged days (harmless: a day's rows are replaced by the same rows).
MAX_REFRESH_RUNS = 8
# When merging down to MAX_REFRESH_RUNS still covers this share of the span from the first to
# the last day, one run over the span recomputes few more days and saves the other runs'
# start-up and bookkeeping (1% of the phase rows changed, spread over six years: 8 runs
# covering ~2,000 of 2,172 days).
ONE_RUN_SHARE = 0.5


def partition_bounds() -> tuple[date, date]:
    """The first day of the daily partitions and the day after the last (exclusive end)."""
    return (DAILY.get_first_partition_window().start.date(),
            DAILY.get_last_partition_window().end.date())


def partition_days(days) -> tuple[list[date], list[date]]:
    """The days that are daily partitions, and those outside the partitioned range."""
    days = set(days)
    first = DAILY.get_first_partition_window().start.date()
    last = DAILY.get_last_partition_window().start.date()
    inside = sorted(d for d in days if first <= d <= last)
    return inside, sorted(d for d in days if not first <= d <= last)


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
        ranges[i:i + 2] = [(ranges[i][0], ranges[i + 1][1])]
    span = (ranges[-1][1] - ranges[0][0]).days + 1
    if sum((last - first).days + 1 for first, last in ranges) >= ONE_RUN_SHARE * span:
        return [(ranges[0][0], ranges[-1][1])]
    return ranges


def range_tags(first: date, last: date) -> dict[str, str]:
    """Tags that make one run cover partitions first..last (single-run backfill policy)."""
    return {RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()}
