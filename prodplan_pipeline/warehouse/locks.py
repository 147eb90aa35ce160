"""Named PostgreSQL advisory locks, so two processes never migrate (or ingest) at once."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator

# Every lock the project takes, by name. The 64-bit key is derived from the name so that it is
# stable across processes and releases and cannot collide with another lock of this project.
MIGRATIONS_LOCK = "prodplan.migrations"
INGESTION_LOCK = "prodplan.ingestion"


def lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def lock_holder_pid(conn, name: str) -> int | None:
    """The backend pid holding the named lock, if any."""
    key = lock_key(name)
    with conn.cursor() as cur:
        cur.execute(
            """SELECT pid FROM pg_locks
               WHERE locktype = 'advisory' AND granted AND objsubid = 1
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND ((classid::bigint << 32) | objid::bigint) = %s
               LIMIT 1""",
            (key,),
        )
        row = cur.fetchone()
    return row[0] if row else None


@contextlib.contextmanager
def try_advisory_lock(conn, name: str) -> Iterator[bool]:
    """Hold the session-level advisory lock ``name`` if it is free (yields True), else yield
    False at once."""
    key = lock_key(name)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        acquired = cur.fetchone()[0]
    conn.commit()
    try:
        yield acquired
    finally:
        if acquired and conn.closed == 0:
            conn.rollback()
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
            conn.commit()


# Locks this process holds: `prodplan ingest` holds the ingestion lock around the whole command,
# and the in-process Dagster run inside it (whose resource takes the same lock) must not wait
# for its own launcher.
_HELD: set[str] = set()


@contextlib.contextmanager
def advisory_lock(
    conn, name: str, on_wait: Callable[[str], None] | None = None, reentrant: bool = False
) -> Iterator[None]:
    """Hold the session-level advisory lock ``name``; wait for it, saying so, when it is taken.
    ``reentrant``: when this process already holds it, go on without waiting."""
    if reentrant and name in _HELD:
        yield
        return
    key = lock_key(name)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        acquired = cur.fetchone()[0]
        if not acquired:
            if on_wait is not None:
                holder = lock_holder_pid(conn, name)
                on_wait(f"waiting for the {name} lock, held by database session {holder} ...")
            cur.execute("SELECT pg_advisory_lock(%s)", (key,))
    conn.commit()  # the lock is session-level; do not leave a transaction open around it
    _HELD.add(name)
    try:
        yield
    finally:
        _HELD.discard(name)
        if conn.closed == 0:
            conn.rollback()
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
            conn.commit()
