"""The embedded PostgreSQL server (``pgserver``) used when no ``PRODPLAN_DATABASE_URL`` is set.

The server is started once under ``$PRODPLAN_HOME/pgdata`` and left running when the process
exits (``cleanup_mode=None``), so the next ``prodplan`` command, the Dagster UI and the API all
reuse the same server instead of each starting (and fighting over) their own.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

SERVER_USER = "pgserver"  # the system user pgserver runs PostgreSQL as when started by root
# Machine-wide, not per PRODPLAN_HOME: the system user is the machine's.
SERVER_USER_LOCK = Path(tempfile.gettempdir()) / "prodplan_pgserver_user.lock"


def _pgserver():
    # Imported here, under a filter: platformdirs warns at pgserver's import when XDG_RUNTIME_DIR
    # is unset (CI, containers); it is harmless here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # (imported only where the embedded server is used)
        import pgserver
        import pgserver.utils

        return pgserver


def embedded_server_uri(pgdata: Path, database: str = "postgres") -> str:
    """Start the server under ``pgdata`` (or reuse the running one) and return a libpq URI."""
    pgdata.mkdir(parents=True, exist_ok=True)
    pgserver = _pgserver()
    ensure_server_user()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(pgdata, cleanup_mode=None)
    return server.get_uri(database)


def running_server_pid(pgdata: Path) -> int | None:
    """The postmaster's pid if a server is running on ``pgdata``, without starting one."""
    info = _pgserver().utils.PostmasterInfo.read_from_pgdata(pgdata)
    return info.pid if info is not None and info.is_running() else None


def stop_embedded_server(pgdata: Path, discard: bool = False) -> bool:
    """Stop the server running on ``pgdata``; False when none was running. ``discard``: its
    files are deleted next, so it stops without its shutdown checkpoint (``-m immediate``:
    writing out every dirty page of a test session's databases took seconds)."""
    if running_server_pid(pgdata) is None:
        return False
    pgserver = _pgserver()
    user = SERVER_USER if _is_root() else None
    pgserver.pg_ctl(["-w", "-m", "immediate" if discard else "fast", "stop"], pgdata=pgdata, user=user)
    return True


def ensure_server_user(name: str = SERVER_USER) -> int | None:
    """As root, create the system user the server runs as (its uid), once per machine; else None.

    pgserver creates it itself, but unlocked: two processes starting their first servers at once
    (the test workers on a fresh machine) both ran ``useradd``; one failed with "user already
    exists", or initdb found its folder chowned to a uid that was no longer the user's."""
    if not _is_root():
        return None
    SERVER_USER_LOCK.touch(exist_ok=True)
    with SERVER_USER_LOCK.open("r") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return _pgserver().utils.ensure_user_exists(name).pw_uid


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0
