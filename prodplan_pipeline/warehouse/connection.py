"""Resolve the warehouse's URL, create databases on demand, and hand out connections.

SQLAlchemy 2.1 maps a bare ``postgresql://`` URL to psycopg 3, which this project does not
install (and which breaks dagster-postgres' storage); every URL is therefore normalised to the
explicit ``postgresql+psycopg2`` driver.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Iterator

import psycopg2
from psycopg2 import sql
from sqlalchemy.engine import URL

from prodplan_pipeline.settings import Settings
from prodplan_pipeline.warehouse.embedded import embedded_server_uri
from prodplan_pipeline.warehouse.lost import database_lost_message
from prodplan_pipeline.warehouse.migrations import apply_migrations
from prodplan_pipeline.warehouse.urls import DatabaseConfigError, normalise_url

MIN_SERVER_VERSION = 150000  # MERGE and UNIQUE NULLS NOT DISTINCT need PostgreSQL 15
WAREHOUSE_DATABASE = "prodplan"


def server_url(settings: Settings, database: str = WAREHOUSE_DATABASE) -> URL:
    """The URL of ``database`` on the configured server, or on the embedded one."""
    if settings.database_url:
        url = normalise_url(settings.database_url)
        # A configured URL names the warehouse database; other databases live beside it.
        return url if database == WAREHOUSE_DATABASE else url.set(database=database)
    return normalise_url(embedded_server_uri(settings.pgdata, database))


def ensure_database(url: URL) -> None:
    """Check the server is reachable and recent enough; create the database when missing."""
    try:
        conn = _connect_or_create(url)
    except psycopg2.OperationalError as exc:
        where = url.render_as_string(hide_password=True)
        # a server that is down gets the paragraph that says what to do; a refusal (password,
        # permissions) its own words
        raise DatabaseConfigError(
            database_lost_message(exc, server=where)
            or f"cannot connect to PostgreSQL at {where}: {' '.join(str(exc).split())}"
        ) from None
    try:
        version = conn.server_version
    finally:
        conn.close()
    if version < MIN_SERVER_VERSION:
        raise DatabaseConfigError(
            f"the PostgreSQL server at {url.render_as_string(hide_password=True)} is version "
            f"{version // 10000}; ProdPlan needs PostgreSQL 15 or newer."
        )


def _connect_or_create(url: URL):
    try:
        return psycopg2.connect(libpq_dsn(url))
    except psycopg2.OperationalError as exc:
        if f'database "{url.database}" does not exist' not in str(exc):
            raise
    admin = psycopg2.connect(libpq_dsn(url.set(database="postgres")))
    try:
        admin.autocommit = True
        with (
            admin.cursor() as cur,
            contextlib.suppress(psycopg2.errors.DuplicateDatabase, psycopg2.errors.UniqueViolation),
        ):
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(url.database)))
    finally:
        admin.close()
    return psycopg2.connect(libpq_dsn(url))


def libpq_dsn(url: URL) -> str:
    """psycopg2 takes a libpq URI, which has no ``+driver`` part."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class Warehouse:
    """The warehouse database: a URL, an engine, and raw psycopg2 connections for COPY."""

    def __init__(self, url: URL | str):
        self.url = normalise_url(url) if isinstance(url, str) else url

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, migrate: bool = True) -> Warehouse:
        """Resolve, create if needed and (by default) migrate the configured warehouse."""
        settings = settings or Settings.from_env()
        warehouse = cls(server_url(settings))
        ensure_database(warehouse.url)
        if migrate:
            warehouse.migrate()
        return warehouse

    @property
    def display_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    @contextlib.contextmanager
    def connect(self) -> Iterator[psycopg2.extensions.connection]:
        """A psycopg2 connection in a fresh session state (commit on success, rollback on error).

        Kept for reuse by this process after a clean exit, reset to a new session's state
        (``IDLE_CONNECTIONS``); closed after an error."""
        conn = IDLE_CONNECTIONS.take(self.url)
        try:
            with conn:
                yield conn
        except BaseException:
            conn.close()
            raise
        IDLE_CONNECTIONS.give(self.url, conn)

    def migrate(self, log=None) -> list[str]:
        with self.connect() as conn:
            return apply_migrations(conn, log=log)


class IdleConnections:
    """Connections a process has finished with, kept for its next ``Warehouse.connect``.

    A new PostgreSQL session costs ~5-7 ms of server CPU (a forked backend, authentication, a
    cold catalog cache) against ~0.05 ms for a query on an open one, and one ingestion asked for
    ~60 of them. A returned connection is reset with DISCARD ALL (temp tables and views,
    session settings, advisory locks, prepared statements: nothing of its last user survives)
    and pinged before reuse, so a server restarted meanwhile costs a new connection, not an
    error. Keyed by process id: a forked child never touches its parent's sockets."""

    def __init__(self, keep: int = 4):
        self.keep = keep
        self._idle: dict[tuple[int, str], list] = {}
        self._lock = threading.Lock()

    def take(self, url: URL):
        dsn = libpq_dsn(url)
        while (conn := self._pop((os.getpid(), dsn))) is not None:
            if _alive(conn):
                return conn
            conn.close()
        return psycopg2.connect(dsn)

    def give(self, url: URL, conn) -> None:
        if conn.closed or not _reset(conn):
            conn.close()
            return
        with self._lock:
            idle = self._idle.setdefault((os.getpid(), libpq_dsn(url)), [])
            if len(idle) < self.keep:
                idle.append(conn)
                return
        conn.close()

    def close_all(self) -> None:
        with self._lock:
            mine = [c for (pid, _), conns in self._idle.items() if pid == os.getpid() for c in conns]
            self._idle = {key: conns for key, conns in self._idle.items() if key[0] != os.getpid()}
        for conn in mine:
            conn.close()

    def _pop(self, key: tuple[int, str]):
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None


def _reset(conn) -> bool:
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("DISCARD ALL")
        conn.set_session(isolation_level="DEFAULT", readonly="DEFAULT", deferrable="DEFAULT", autocommit=False)
        conn.notices.clear()
        return True
    except psycopg2.Error:
        return False


def _alive(conn) -> bool:
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        conn.rollback()  # the ping's transaction: the next user starts a clean one
        return True
    except psycopg2.Error:
        return False


IDLE_CONNECTIONS = IdleConnections()
atexit.register(IDLE_CONNECTIONS.close_all)


def fetch_dicts(cur, statement: str, params=()) -> list[dict]:
    """Run ``statement`` and return its rows as dicts keyed by column name."""
    cur.execute(statement, params)
    names = [d.name for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
