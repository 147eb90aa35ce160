"""Read-only access to the warehouse for the API: a bounded pool, rows as dicts, and one error
type for "the database cannot be reached", which the API turns into 503 rather than 500."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg2
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from prodplan_pipeline.warehouse.connection import fetch_dicts, normalise_url

# A request that waits longer than this for a connection fails fast instead of queueing forever.
POOL_TIMEOUT = 5.0
CONNECT_TIMEOUT = 3  # seconds; a stopped server answers at once, an unreachable host does not
STATEMENT_TIMEOUT_MS = 10_000
# One snapshot for every statement until ROLLBACK (read-only: it never fails to serialise).
BEGIN_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
END_SNAPSHOT = "ROLLBACK"
T = TypeVar("T")


class DatabaseUnavailable(RuntimeError):
    """The warehouse could not be reached (or did not answer in time)."""


class _Reads:
    """``row`` and ``execute_prepared`` over a ``rows`` of the subclass's own."""

    prepared: dict[str, str]

    def rows(self, statement: str, params: dict | tuple | None = None) -> list[dict[str, Any]]:
        raise NotImplementedError  # pragma: no cover - per subclass

    def row(self, statement: str, params: dict | tuple | None = None) -> dict[str, Any] | None:
        found = self.rows(statement, params)
        return found[0] if found else None

    def execute_prepared(self, name: str, *args: Any) -> list[dict[str, Any]]:
        if name not in self.prepared:
            raise KeyError(f"{name} is not a prepared statement of this pool")
        placeholders = ", ".join(["%s"] * len(args))
        return self.rows(f"EXECUTE {name}({placeholders})", args)


def _fetch(conn, statement: str, params) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        return fetch_dicts(cur, statement, params)


class SnapshotReader(_Reads):
    """The pool's reads on one connection inside one REPEATABLE READ transaction: every
    statement sees the snapshot the first one took (see :meth:`ReadPool.in_snapshot`). The
    BEGIN travels with the first statement, sparing it a round trip of its own."""

    def __init__(self, conn, prepared: dict[str, str]):
        self._conn = conn
        self.prepared = prepared
        self.began = False

    def rows(self, statement: str, params: dict | tuple | None = None) -> list[dict[str, Any]]:
        if not self.began:
            self.began = True  # before sending: a failed first statement still began
            statement = f"{BEGIN_SNAPSHOT}; {statement}"
        return _fetch(self._conn, statement, params)


class ReadPool(_Reads):
    """A SQLAlchemy connection pool handing out psycopg2 connections in read-only sessions.

    ``prepared`` maps names to SQL (``$1`` placeholders) that every new connection PREPAREs:
    lookups on the monthly-partitioned phase table then skip planning ~80 partitions per call
    (generic plans: ~1.5 ms instead of ~6). Without ``pre_ping`` a connection the server closed
    is noticed when used, and the read is retried once on a fresh one (reads are idempotent).
    """

    def __init__(
        self,
        url,
        pool_size: int = 10,
        max_overflow: int = 0,
        pre_ping: bool = False,
        prepared: dict[str, str] | None = None,
    ):
        self.url = normalise_url(str(url) if not isinstance(url, sa.URL) else url)
        self.prepared = dict(prepared or {})
        self.engine = sa.create_engine(
            self.url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=POOL_TIMEOUT,
            pool_pre_ping=pre_ping,
            pool_recycle=1800,
            # Reads only: autocommit spares the BEGIN and the ROLLBACK on return to the pool, a
            # round trip per request (each statement still sees one consistent snapshot;
            # in_snapshot holds one across several statements).
            isolation_level="AUTOCOMMIT",
            pool_reset_on_return=None,
            connect_args={
                "connect_timeout": CONNECT_TIMEOUT,
                # work_mem: the KPI group-bys over a year of daily rows sort in memory
                "options": "-c default_transaction_read_only=on -c work_mem=32MB "
                "-c plan_cache_mode=force_generic_plan "
                f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                "application_name": "prodplan-api",
            },
        )
        sa.event.listen(self.engine, "connect", self._prepare)

    def _prepare(self, dbapi_connection, record) -> None:
        with dbapi_connection.cursor() as cur:
            for name, statement in self.prepared.items():  # names come from code, never input
                cur.execute(f"PREPARE {name} AS {statement}")

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """A pooled DB-API connection (autocommit: nothing to roll back when it returns)."""
        try:
            conn = self.engine.raw_connection()
        except (sa_exc.OperationalError, sa_exc.TimeoutError, psycopg2.OperationalError) as error:
            raise DatabaseUnavailable(_first_line(error)) from error
        try:
            yield conn
        except psycopg2.OperationalError as error:
            # The server went away (or restarted): this connection and every idle one in the
            # pool are dead; drop them all so the retry and later requests connect afresh.
            conn.invalidate()
            self.engine.dispose()
            raise DatabaseUnavailable(_first_line(error)) from error
        finally:
            conn.close()

    def rows(self, statement: str, params: dict | tuple | None = None) -> list[dict[str, Any]]:
        try:
            return self._rows(statement, params)
        except DatabaseUnavailable:
            return self._rows(statement, params)  # once more, on a new connection

    def _rows(self, statement: str, params) -> list[dict[str, Any]]:
        with self.connect() as conn:
            return _fetch(conn, statement, params)

    def in_snapshot(self, work: Callable[[SnapshotReader], T]) -> T:
        """``work(reader)`` with every read in one snapshot of the database: a commit landing
        meanwhile is in all of them or in none (each autocommit statement takes a snapshot of
        its own). Retried once, whole, on a fresh connection when the server went away."""
        try:
            return self._in_snapshot(work)
        except DatabaseUnavailable:
            return self._in_snapshot(work)

    def _in_snapshot(self, work: Callable[[SnapshotReader], T]) -> T:
        with self.connect() as conn:
            reader = SnapshotReader(conn, self.prepared)
            try:
                return work(reader)
            finally:
                # The pool does not reset connections on return: the transaction ends here. A
                # connection the server dropped has nothing left to end.
                if reader.began and not conn.closed:
                    with conn.cursor() as cur:
                        cur.execute(END_SNAPSHOT)

    def dispose(self) -> None:
        self.engine.dispose()


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
