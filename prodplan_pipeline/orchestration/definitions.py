"""The one ``Definitions`` object of the code location: it only wires things up."""

from dagster import Definitions

from prodplan_pipeline.orchestration.maintenance import warehouse_maintenance_job
from prodplan_pipeline.orchestration.resources import build_resources

defs = Definitions(
    jobs=[warehouse_maintenance_job],
    resources=build_resources(),
)
