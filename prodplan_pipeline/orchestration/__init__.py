"""The thin Dagster layer: assets, checks, jobs and resources that call the plain modules."""
