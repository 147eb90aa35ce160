"""Dagster resources, chosen in one place from the environment."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import replace
from functools import cache
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from prodplan_pipeline.plants import default_workbook
from prodplan_pipeline.settings import Settings
from prodplan_pipeline.warehouse import Warehouse
from prodplan_pipeline.warehouse.locks import INGESTION_LOCK, advisory_lock
from prodplan_pipeline.workbook.private_copy import copy_for, private_copy


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


class SettingsResource(ConfigurableResource):
    """The deployment's PRODPLAN_* settings for assets and sensors, read when a run or a tick
    uses them (a deployment changes its environment, not this code). Assets and sensors read
    settings only through resources, never from the environment themselves."""

    # Where reports are written, for this deployment only (unset: PRODPLAN_REPORTS_DIR, else
    # $PRODPLAN_HOME/reports).
    reports_dir: str | None = None

    def get(self) -> Settings:
        settings = Settings.from_env()
        return replace(settings, reports_dir=Path(self.reports_dir)) if self.reports_dir else settings


class WorkbookResource(ConfigurableResource):
    """The workbook a run ingests and how. ``path`` unset: ``PRODPLAN_WORKBOOK``, else the
    sample that `prodplan demo` generates under ``$PRODPLAN_HOME``."""

    path: str | None = None
    force: bool = False  # re-read and re-merge sheets whose content hash is unchanged
    # The shrink guard: a sheet may lose at most this share of its rows (unset: PRODPLAN_MAX_SHRINK).
    max_shrink: float | None = None

    def shrink_limit(self) -> float:
        return Settings.from_env().max_shrink if self.max_shrink is None else self.max_shrink

    def max_uncompressed(self) -> int:
        """Bytes of XML a workbook may declare (PRODPLAN_MAX_UNCOMPRESSED_MB)."""
        return Settings.from_env().max_uncompressed

    def resolved_path(self) -> Path:
        return Path(self.path).expanduser() if self.path else default_workbook(Settings.from_env())

    def private_copy(self) -> tuple[Path, str]:
        """Copy the workbook into the private store: (the copy every step reads, its SHA-256)."""
        settings = Settings.from_env()
        return private_copy(self.resolved_path(), settings.exports, settings.exports_keep)

    def copy_of(self, sha256: str) -> Path:
        return copy_for(Settings.from_env().exports, sha256)


class IngestionLockResource(ConfigurableResource):
    """Holds the ingestion advisory lock for the whole run, so two ingestions never interleave:
    a second run waits (and says so in its log) until the first has finished."""

    warehouse: WarehouseResource
    _stack: ExitStack | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        stack = ExitStack()
        conn = stack.enter_context(self.warehouse.get_warehouse().connect())

        def on_wait(message: str) -> None:  # in the run log and on the terminal of `prodplan`
            logging.getLogger("prodplan.progress").warning(message)
            if context.log:
                context.log.warning(message)

        stack.enter_context(advisory_lock(conn, INGESTION_LOCK, on_wait=on_wait, reentrant=True))
        self._stack = stack

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None


def build_resources() -> dict[str, object]:
    """The resources of this deployment; nothing here connects until a run uses it."""
    warehouse = WarehouseResource()
    return {
        "settings": SettingsResource(),
        "warehouse": warehouse,
        "workbook_file": WorkbookResource(),
        "ingestion_lock": IngestionLockResource(warehouse=warehouse),
    }
