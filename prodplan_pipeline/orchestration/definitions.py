"""The one ``Definitions`` object of the code location: it only wires things up."""

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from prodplan_pipeline.orchestration import automation
from prodplan_pipeline.orchestration.analytics import analytics_assets
from prodplan_pipeline.orchestration.daily_partitions import DAILY_REFRESH_JOB, INGEST_JOB
from prodplan_pipeline.orchestration.environment import SETTINGS
from prodplan_pipeline.orchestration.freshness import with_freshness_policies
from prodplan_pipeline.orchestration.ingestion import ingestion_assets
from prodplan_pipeline.orchestration.instance import bound_storage_retries
from prodplan_pipeline.orchestration.maintenance import warehouse_maintenance_job
from prodplan_pipeline.orchestration.quality import quality_assets, quality_checks
from prodplan_pipeline.orchestration.resources import build_resources

# Every process that loads the code location (`prodplan ingest`'s in-process runs, the UI's code
# server and run workers) gives up on a lost database after PRODPLAN_DB_RETRY_SECONDS, once,
# instead of dagster-postgres' ~12 s per connection; it happens before any instance is created.
bound_storage_retries(SETTINGS.db_retry_seconds)
alert_sensors = automation.alert_sensors(SETTINGS.alert_interval_seconds)

# In-process: one process holds the ingestion lock for the whole run, and the steps do not pay a
# subprocess start each.
ingest_job = define_asset_job(
    INGEST_JOB,
    selection=AssetSelection.groups("raw", "core", "derived", "quality"),
    executor_def=in_process_executor,
    description="Workbook -> staging -> core (blocking count reconciliation per sheet) -> derived "
    "columns, data-quality issues, feature gates, data dictionary.",
)

# Daily aggregates for a day range (one run covers a range), plus the current layers and the views.
refresh_job = define_asset_job(
    DAILY_REFRESH_JOB,
    selection=AssetSelection.groups("analytics"),  # partitioned by DAILY (inferred)
    executor_def=in_process_executor,
    description="Replace the daily aggregates of the run's day range, the current layers (WIP, phase flow, "
    "defect Pareto, orders at risk) and the materialized views.",
)

defs = Definitions(
    # The jobs Dagster makes up (a UI "Materialize") run
    # in-process too: the multiprocess default starts a Python process per step (~5 s of CPU
    # each), and a stop that lands while those start takes as long as they do.
    executor=in_process_executor,
    assets=with_freshness_policies([*ingestion_assets, *quality_assets, *analytics_assets], SETTINGS.freshness_hours),
    asset_checks=quality_checks,
    jobs=[ingest_job, refresh_job, warehouse_maintenance_job],
    sensors=[*automation.sensors, *alert_sensors],
    schedules=automation.schedules,
    resources=build_resources(),
)
