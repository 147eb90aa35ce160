"""Dagster resources, chosen in one place from the environment."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path

from dagster import ConfigurableResource

from prodplan_pipeline.settings import Settings
from prodplan_pipeline.warehouse import Warehouse


@cache
def _warehouse_for(database_url: str | None, home: str) -> Warehouse:
    # One Warehouse (engine, resolved server, applied migrations) per process and target:
    # resolving the embedded server and checking migrations on every op would be wasted work.
    settings = replace(Settings.from_env(), database_url=database_url, home=Path(home))
    return Warehouse.from_settings(settings)


class WarehouseResource(ConfigurableResource):
    """The PostgreSQL warehouse. ``database_url`` unset: ``PRODPLAN_DATABASE_URL``, else the
    embedded server under ``$PRODPLAN_HOME/pgdata``. Migrations are applied on first use."""

    database_url: str | None = None
    home: str | None = None

    def get_warehouse(self) -> Warehouse:
        env = Settings.from_env()
        return _warehouse_for(self.database_url or env.database_url, self.home or str(env.home))


def build_resources() -> dict[str, object]:
    """The resources of this deployment; nothing here connects until a run uses it."""
    return {"warehouse": WarehouseResource()}
