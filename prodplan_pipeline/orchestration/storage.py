"""Dagster's storage, named in ``dagster.yaml``: the project's PostgreSQL, found the way every
``prodplan`` command finds it, so plain ``dagster dev`` or ``dagster definitions validate`` in the
repository root needs no variable (the embedded server is started on demand).

Four things differ from dagster-postgres' own ``postgres`` storage, all for bookkeeping speed
(a first load records one materialization per day and aggregate: ~7,600 events):

- pooled connections: dagster-postgres opens a new connection per call (NullPool), 38,000 of
  them for a first load; here each storage keeps one open (plus overflow for threads);
- a single-run backfill records one "planned" event per asset with its partition range, not
  one per partition (Dagster's DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS behaviour; the
  trade-off Dagster names: a failed range run leaves its days as they were rather than marking
  each one failed; the next convergence re-runs them anyway);
- events are written in batches of 1,000 (``DAGSTER_EVENT_BATCH_SIZE``, read by Dagster at each
  event; set here as a default because every process that writes events builds this storage);
- a batch of materializations is one executemany INSERT, not a multi-VALUES statement that
  SQLAlchemy compiles afresh for every batch;
- a ranged run's materializations, equal but for their partition and time, are serialized
  once: each event's JSON is that text with its own partition and time put in (Dagster's serdes
  packed each ~3 KB event afresh: ~0.25 ms each, ~1 s of a 2,204-day refresh of two aggregates).

Measured (the refresh job over 2,528 days, 3 daily assets, one process, a small warehouse so
that nearly all of it is Dagster): 774 s and 38,001 connections as dagster-postgres ships;
12.8 s and 14 connections with the first three changes; 10.6 s with all four.
"""

from __future__ import annotations

import json
import os
from functools import cache

import sqlalchemy.pool as db_pool
from dagster import DagsterEventType, Field, StringSource
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log import SqlEventLogStorageTable
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
from dagster._core.storage.root import LocalArtifactStorage
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import create_pg_engine

from prodplan_pipeline.settings import Settings
from prodplan_pipeline.warehouse.connection import ensure_database, server_url

EVENT_BATCH_SIZE = "1000"
# pool_size 3: writing an event holds one connection while Dagster opens a second (a table
# check) and sometimes a third inside it; with one kept, every such nested checkout opened and
# closed a connection of its own (33 of a small first load's 86 sessions). Pre-ping: a
# restarted server costs a reconnect, not an error.
POOL = {"poolclass": db_pool.QueuePool, "pool_size": 3, "max_overflow": 6, "pool_recycle": 3600, "pool_pre_ping": True}
OPTIONAL_URL = {"postgres_url": Field(StringSource, is_required=False)}


def storage_url(configured: str | None = None) -> str:
    """The configured URL, else PRODPLAN_DAGSTER_STORAGE_URL, else database ``dagster`` beside
    the warehouse (the configured server or the embedded one), created on demand."""
    return configured or resolved_storage_url(Settings.from_env())


@cache  # per settings: resolving starts the embedded server or connects to check the database
def resolved_storage_url(settings: Settings) -> str:
    if settings.dagster_storage_url:
        return settings.dagster_storage_url
    url = server_url(settings, settings.dagster_database)
    ensure_database(url)
    return url.render_as_string(hide_password=False)


class _Pooled:
    """A dagster-postgres storage whose engine keeps its connections, and whose URL defaults to
    ProdPlan's (``storage_url``)."""

    def __init__(
        self, postgres_url: str, should_autocreate_tables: bool = True, inst_data: ConfigurableClassData | None = None
    ):
        super().__init__(postgres_url, should_autocreate_tables, inst_data)
        # The constructor built a NullPool engine (and made the tables with it): swap it for a
        # pooled one on the same URL.
        self._engine = create_pg_engine(self.postgres_url, None, isolation_level="AUTOCOMMIT", **POOL)

    @classmethod
    def config_type(cls):
        return OPTIONAL_URL

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(storage_url(config_value.get("postgres_url")), inst_data=inst_data)

    def dispose(self) -> None:
        """Close the kept connections with the instance (a process that opens several
        instances, one per run, would otherwise keep each one's sessions until collected)."""
        super().dispose()
        self._engine.dispose()


class PooledRunStorage(_Pooled, PostgresRunStorage):
    pass


class PooledScheduleStorage(_Pooled, PostgresScheduleStorage):
    pass


class PooledEventLogStorage(_Pooled, PostgresEventLogStorage):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)

    @property
    def supports_partition_subset_in_asset_materialization_planned_events(self) -> bool:
        return True

    def store_event_batch(self, events) -> None:
        """dagster-postgres' batch write of materializations, as one executemany statement: its
        multi-VALUES statement is compiled afresh per batch, 7 parameters per event (~0.5 ms
        an event). Any other batch goes the library's way."""
        if not events or any(e.dagster_event_type != DagsterEventType.ASSET_MATERIALIZATION for e in events):
            return super().store_event_batch(events)
        serialized = serialized_alike(events)
        rows = (
            [self._event_to_row(event) for event in events]
            if serialized is None
            else [self._event_to_row_serialized(event, text) for event, text in zip(events, serialized, strict=True)]
        )
        insert = SqlEventLogStorageTable.insert().returning(
            SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
        )  # ids in the events' order
        with self._connect() as conn:
            event_ids = [row[0] for row in conn.execute(insert, rows)]
        with self.index_transaction() as conn:
            self._store_asset_event_tags(conn, events, event_ids)
            self._store_asset_event(conn, events[-1], event_ids[-1])  # the asset's latest event

    def _event_to_row_serialized(self, event, text: str) -> dict:
        """The library's row for ``event`` (``_event_to_row``), its JSON given."""
        materialization = event.dagster_event
        return {
            "run_id": event.run_id,
            "event": text,
            "dagster_event_type": materialization.event_type_value,
            "timestamp": self._event_insert_timestamp(event),
            "step_key": materialization.step_key,
            "asset_key": materialization.asset_key.to_string(),
            "partition": materialization.partition,
        }


# Stand-ins put in the one event serialized: a partition key no partitions definition makes, and
# a time no event has; each must appear exactly once in the text, else every event is packed.
PARTITION_MARK = "prodplan:partition:7f3a9c"
TIME_MARK = 0.123456789


def serialized_alike(events) -> list[str] | None:
    """The JSON of each materialization in ``events`` when they differ only by partition and
    time (a ranged run's: one per partition, the same metadata and tags), by serializing one;
    None when they differ in anything else."""
    first = _with(events[0], None, 0.0)
    if any(_with(event, None, 0.0) != first for event in events[1:]):
        return None
    template = serialize_value(_with(events[0], PARTITION_MARK, TIME_MARK))
    partition_mark, time_mark = json.dumps(PARTITION_MARK), json.dumps(TIME_MARK)
    if template.count(partition_mark) != 1 or template.count(time_mark) != 1:
        return None
    return [
        template.replace(partition_mark, json.dumps(event.dagster_event.partition)).replace(
            time_mark, json.dumps(event.timestamp)
        )
        for event in events
    ]


def _with(event, partition: str | None, timestamp: float):
    """``event`` (a materialization) with another partition and time."""
    dagster_event = event.dagster_event
    data = dagster_event.event_specific_data
    materialization = data.materialization._replace(partition=partition)
    return event._replace(
        timestamp=timestamp,
        dagster_event=dagster_event._replace(event_specific_data=data._replace(materialization=materialization)),
    )


class ProdPlanStorage(DagsterStorage, ConfigurableClass):
    """Runs, events and schedules in the ``dagster`` database of ProdPlan's server."""

    def __init__(self, postgres_url: str | None = None, inst_data: ConfigurableClassData | None = None):
        self._inst_data = inst_data
        url = storage_url(postgres_url)
        self._run_storage = PooledRunStorage(url)
        self._event_log_storage = PooledEventLogStorage(url)
        self._schedule_storage = PooledScheduleStorage(url)
        super().__init__()

    @property
    def inst_data(self):
        return self._inst_data

    @classmethod
    def config_type(cls):
        return OPTIONAL_URL

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(config_value.get("postgres_url"), inst_data=inst_data)

    @property
    def event_log_storage(self):
        return self._event_log_storage

    @property
    def run_storage(self):
        return self._run_storage

    @property
    def schedule_storage(self):
        return self._schedule_storage

    def _part(self, name: str) -> ConfigurableClassData | None:
        # Processes that rebuild one storage from the instance's description get the same class.
        config = self._inst_data.config_yaml if self._inst_data else "{}"
        return ConfigurableClassData(__name__, name, config)

    @property
    def event_storage_data(self):
        return self._part(PooledEventLogStorage.__name__)

    @property
    def run_storage_data(self):
        return self._part(PooledRunStorage.__name__)

    @property
    def schedule_storage_data(self):
        return self._part(PooledScheduleStorage.__name__)


def _artifacts_dir(configured: str | None) -> str:
    return configured or str(Settings.from_env().dagster_home)


class ProdPlanArtifactStorage(LocalArtifactStorage):
    """Dagster's local files (run files, compute logs) under $PRODPLAN_HOME/dagster, whatever
    DAGSTER_HOME is: ``dagster dev`` without one uses a temporary folder that it deletes."""

    @classmethod
    def config_type(cls):
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(_artifacts_dir(config_value.get("base_dir")), inst_data=inst_data)


class ProdPlanComputeLogs(LocalComputeLogManager):
    """Steps' stdout/stderr under $PRODPLAN_HOME/dagster/storage (see ProdPlanArtifactStorage)."""

    @classmethod
    def config_type(cls):
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        base = os.path.join(_artifacts_dir(config_value.get("base_dir")), "storage")
        return cls(base, inst_data=inst_data)
