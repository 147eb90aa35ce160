"""The settings the code location is built from, read once when it loads: what Dagster needs at
definition time (the daily partitions' start, the freshness window, the alert interval, the
storage retries). Resources read the settings when they run instead, so a sensor sees a changed
PRODPLAN_WORKBOOK without a reload."""

from prodplan_pipeline.settings import Settings

SETTINGS = Settings.from_env()
