"""Warehouse maintenance as a Dagster job: schema migrations, then monthly partitions."""

# No `from __future__ import annotations` here: Dagster inspects the context annotation.
from dagster import In, Nothing, OpExecutionContext, job, op

from prodplan_pipeline.orchestration.resources import WarehouseResource
from prodplan_pipeline.warehouse.monthly_partitions import maintain_partitions

MONTHS_AHEAD = 6


@op(description="Apply pending sql/migrations files (each once, under an advisory lock).")
def apply_schema_migrations(context: OpExecutionContext, warehouse: WarehouseResource) -> None:
    applied = warehouse.get_warehouse().migrate(log=context.log.info)
    context.log.info(f"{len(applied)} migration(s) applied" if applied else "schema up to date")


@op(
    ins={"after": In(Nothing)},
    description=f"Create monthly partitions of core.fases_ordem_fabrico for the data's months "
    f"and {MONTHS_AHEAD} months ahead; report rows left in the default partition.",
)
def maintain_fases_partitions(context: OpExecutionContext, warehouse: WarehouseResource) -> None:
    with warehouse.get_warehouse().connect() as conn:
        report = maintain_partitions(conn, months_ahead=MONTHS_AHEAD)
    context.log.info(
        f"{report.created} partition(s) created; {report.partitions} monthly partitions cover "
        f"{report.first_month:%Y-%m} .. {report.last_month:%Y-%m}"
    )
    if report.default_rows:
        context.log.warning(f"{report.default_rows} row(s) sit in the default partition")


@job(description="Keep the warehouse schema current and its monthly partitions ahead of the data.")
def warehouse_maintenance_job():
    maintain_fases_partitions(after=apply_schema_migrations())
