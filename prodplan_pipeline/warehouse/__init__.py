"""PostgreSQL: where the warehouse lives (a URL or the embedded server), migrations, locks."""

from prodplan_pipeline.warehouse.connection import DatabaseConfigError, Warehouse

__all__ = ["DatabaseConfigError", "Warehouse"]
