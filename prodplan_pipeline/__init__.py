"""ProdPlan: the factory's ERP workbook into a reconciled PostgreSQL warehouse, run by Dagster."""

__version__ = "0.1.0"
