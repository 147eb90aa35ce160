"""Read-only access to the warehouse for the API: a bounded pool, rows as dicts, and one error
type for "the database cannot be reached", which the API turns into 503 rather than 500."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from prodplan_pipeline.warehouse.connection import normalise_url

# A request that waits longer than this for a connection fails fast instead of queueing forever.
POOL_TIMEOUT = 5.0
CONNECT_TIMEOUT = 3  # seconds; a stopped server answers at once, an unreachable host does not
STATEMENT_TIMEOUT_MS = 10_000


class DatabaseUnavailable(RuntimeError):
    """The warehouse could not be reached (or did not answer in time)."""


class ReadPool:
    """A SQLAlchemy connection pool handing out psycopg2 connections in read-only sessions."""

    def __init__(self, url, pool_size: int = 6, max_overflow: int = 4):
        self.url = normalise_url(str(url) if not isinstance(url, sa.URL) else url)
        self.engine = sa.create_engine(
            self.url, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=POOL_TIMEOUT,
            pool_pre_ping=True, pool_recycle=1800,
            connect_args={"connect_timeout": CONNECT_TIMEOUT,
                          # work_mem: the KPI group-bys over a year of daily rows sort in memory
                          "options": f"-c default_transaction_read_only=on -c work_mem=32MB "
                                     f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                          "application_name": "prodplan-api"})

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """A pooled DB-API connection; its transaction is rolled back when it returns to the pool."""
        try:
            conn = self.engine.raw_connection()
        except (sa_exc.OperationalError, sa_exc.TimeoutError, psycopg2.OperationalError) as error:
            raise DatabaseUnavailable(_first_line(error)) from error
        try:
            yield conn
        except psycopg2.OperationalError as error:
            conn.invalidate()  # the server went away mid-request: never reuse this connection
            raise DatabaseUnavailable(_first_line(error)) from error
        finally:
            conn.close()

    def rows(self, statement: str, params: dict | tuple | None = None) -> list[dict[str, Any]]:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(statement, params)
            names = [c.name for c in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def row(self, statement: str, params: dict | tuple | None = None) -> dict[str, Any] | None:
        found = self.rows(statement, params)
        return found[0] if found else None

    def dispose(self) -> None:
        self.engine.dispose()


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
