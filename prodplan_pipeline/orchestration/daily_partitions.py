"""The daily partitions of the analytics layer, and the names of the jobs sensors target."""

from datetime import date

from dagster import DailyPartitionsDefinition

from prodplan_pipeline.analytics.convergence import daily_window
from prodplan_pipeline.orchestration.environment import SETTINGS

# Configurable so a deployment with older history can start earlier (PRODPLAN_PARTITIONS_START).
PARTITIONS_START = SETTINGS.partitions_start.isoformat()
DAILY = DailyPartitionsDefinition(start_date=PARTITIONS_START, end_offset=1)

INGEST_JOB = "ingest_workbook"
DAILY_REFRESH_JOB = "refresh_daily_aggregates"

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def partition_bounds() -> tuple[date, date]:
    """The first day of the daily partitions and the day after the last (exclusive end)."""
    return daily_window(date.fromisoformat(PARTITIONS_START))


def partition_days(days) -> tuple[list[date], list[date]]:
    """The days that are daily partitions, and those outside the partitioned range."""
    days = set(days)
    first = DAILY.get_first_partition_window().start.date()
    last = DAILY.get_last_partition_window().start.date()
    inside = sorted(d for d in days if first <= d <= last)
    return inside, sorted(d for d in days if not first <= d <= last)


def range_tags(first: date, last: date) -> dict[str, str]:
    """Tags that make one run cover partitions first..last (single-run backfill policy)."""
    return {RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()}
