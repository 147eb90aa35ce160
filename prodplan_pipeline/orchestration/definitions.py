"""The one ``Definitions`` object of the code location: it only wires things up."""

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from prodplan_pipeline.orchestration.ingestion import ingestion_assets
from prodplan_pipeline.orchestration.maintenance import warehouse_maintenance_job
from prodplan_pipeline.orchestration.quality import quality_assets, quality_checks
from prodplan_pipeline.orchestration.resources import build_resources

# In-process: one process holds the ingestion lock for the whole run, and the steps do not pay a
# subprocess start each.
ingest_job = define_asset_job(
    "ingest_workbook",
    selection=AssetSelection.groups("raw", "core", "derived", "quality"),
    executor_def=in_process_executor,
    description="Workbook -> staging -> core (blocking count reconciliation per sheet) -> derived "
    "columns, data-quality issues, feature gates, data dictionary.",
)

defs = Definitions(
    assets=[*ingestion_assets, *quality_assets],
    asset_checks=quality_checks,
    jobs=[ingest_job, warehouse_maintenance_job],
    resources=build_resources(),
)
