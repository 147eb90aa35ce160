"""Hear cache-version bumps as they commit (PostgreSQL LISTEN/NOTIFY) instead of within a second.

``bump_cache_version`` sends ``NOTIFY prodplan_cache_version`` in the refresh's own transaction,
so the notification arrives exactly when the new data is visible. The API then forgets its local
copy of the version at once. If the listening connection is lost, the version's one-second
re-read still applies, and the listener reconnects with backoff.
"""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable

import psycopg2

from prodplan_pipeline.warehouse.cache_version import CACHE_VERSION_CHANNEL as CHANNEL

log = logging.getLogger("prodplan.api")


class VersionListener:
    def __init__(self, dsn: str, on_change: Callable[[], None], max_backoff: float = 30.0):
        self.dsn = dsn
        self.on_change = on_change
        self.max_backoff = max_backoff
        self.notifications = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="version-listener", daemon=True)

    def start(self) -> VersionListener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._listen()
                backoff = 0.5
            except psycopg2.Error as error:
                log.warning("cache-version listener: %s; retrying in %.1f s", str(error).strip(), backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def _listen(self) -> None:
        conn = psycopg2.connect(self.dsn, connect_timeout=3, application_name="prodplan-api-listener")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"LISTEN {CHANNEL}")
            self.on_change()  # bumps missed while not listening
            while not self._stop.is_set():
                if select.select([conn], [], [], 1.0)[0]:
                    conn.poll()
                    if conn.notifies:
                        conn.notifies.clear()
                        self.notifications += 1
                        self.on_change()
        finally:
            conn.close()
