"""Recognise a lost, restarted or unreachable PostgreSQL server and say so in one paragraph.

A server that restarts, crashes or terminates a session surfaces as a dozen different exceptions:
psycopg2's OperationalError or InterfaceError, SQLAlchemy's wrapper of them, dagster-postgres'
"too many retries" whose cause is one of them, or a Dagster step failure that only kept their
class names and messages. The user needs the same four things each time: which server, what
happened, what state it left, what to do. Classes are matched by name, so this module imports
neither psycopg2, SQLAlchemy nor Dagster.
"""

from __future__ import annotations

from prodplan_pipeline.settings import Settings
from prodplan_pipeline.warehouse.urls import DatabaseConfigError, normalise_url

# psycopg2 gives SQLSTATE classes 08 and 57P of its own names (AdminShutdown ...); a serialized
# error keeps only its class's own name, so they are listed besides their base classes. A lost
# connection can also surface as a bare DatabaseError (psycopg2 raises one from a cursor whose
# server went away); the messages below decide.
CONNECTION_ERRORS = frozenset(
    {
        "DatabaseError",
        "OperationalError",
        "InterfaceError",
        "AdminShutdown",
        "CrashShutdown",
        "CannotConnectNow",
        "IdleSessionTimeout",
        "ConnectionException",
        "ConnectionFailure",
        "ConnectionDoesNotExist",
        "SqlclientUnableToEstablishSqlconnection",
    }
)
# An established session that the server ended (restart, crash, pg_terminate_backend).
LOST = (
    "server closed the connection unexpectedly",
    "terminating connection",
    "connection already closed",
    "server terminated abnormally",
    "could not receive data from server",
    "could not send data to server",
    "ssl connection has been closed unexpectedly",
    "ssl syscall error",
    "no connection to the server",
)
# A server that does not take connections (down, starting, recovering, shutting down).
UNREACHABLE = (
    "connection refused",
    "is the server running",
    "the database system is",
    "timeout expired",
    "could not connect to server",
)
MAX_CHAIN = 20  # exceptions looked at per error; chains can loop through __context__


def database_lost_message(error, settings: Settings | None = None, *, server: str | None = None) -> str | None:
    """One paragraph when ``error`` says the database was lost or cannot be reached, else None.

    ``error`` is an exception (its ``__cause__``/``__context__`` chain is searched) or anything
    with a Dagster ``SerializableErrorInfo``'s ``cls_name`` and ``message`` (and optionally
    ``cause`` and ``context``). ``settings`` names the server (password hidden) and tells
    whether it is the embedded one; ``server`` names it instead, for callers holding a URL.
    """
    found = _connection_error(error)
    if found is None:
        return None
    reason, lost = found
    where = server or _server_name(settings)
    happened = (
        f"the connection to PostgreSQL at {where} was lost: the server restarted, crashed "
        f"or terminated the session ({reason})."
        if lost
        else f"cannot connect to PostgreSQL at {where}: the server is down, starting up, "
        f"recovering or refusing connections ({reason})."
    )
    embedded = settings is not None and not settings.database_url and not server
    check = (
        "Check that the server is up (the next `prodplan` command restarts the embedded server)"
        if embedded
        else "Check that the server is up"
    )
    return (
        f"{happened} Nothing partial was committed: a run's snapshot commits as one "
        "transaction, and an uncommitted transaction is rolled back by PostgreSQL. "
        f"{check}, then re-run the same command; the rerun converges."
    )


def _connection_error(error) -> tuple[str, bool] | None:
    """(the reason in the server's words, lost?) of the chain's innermost connection error. A
    lost session wins over a refused connection: the refusals are what came after it."""
    lost = unreachable = None
    for names, message in _chain(error):
        if not names & CONNECTION_ERRORS:
            continue
        lowered = message.lower()  # libpq's hint ("Is the server running ...") is on line 2
        if any(sign in lowered for sign in LOST):
            lost = _first_line(message)
        elif any(sign in lowered for sign in UNREACHABLE):
            unreachable = _first_line(message)
    if lost is not None:
        return lost, True
    return (unreachable, False) if unreachable is not None else None


def _chain(error):
    """(class names, message) of ``error`` and every exception it was caused by or raised in."""
    pending, seen = [error], set()
    while pending and len(seen) < MAX_CHAIN:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BaseException):
            yield {c.__name__ for c in type(current).__mro__}, str(current)
            # `raise ... from None` said the context does not matter (its message says all)
            context = None if current.__suppress_context__ else current.__context__
            pending += [current.__cause__, context, getattr(current, "orig", None)]
        else:  # a serialized error: its message starts "module.Class: "
            yield {getattr(current, "cls_name", None) or ""}, getattr(current, "message", "") or ""
            pending += [getattr(current, "cause", None), getattr(current, "context", None)]


def _first_line(message: str) -> str:
    """The server's words: no "psycopg2.OperationalError: " or "(psycopg2.OperationalError) "."""
    line = next((part.strip() for part in message.splitlines() if part.strip()), "")
    if line.startswith("("):
        line = line.partition(") ")[2] or line
    head, sep, rest = line.partition(": ")
    if sep and head.replace(".", "").isidentifier():  # a class name, not the server's text
        line = rest
    return line.rstrip(".")


def _server_name(settings: Settings | None) -> str:
    """The configured URL without its password, or the embedded server's data directory; never
    starts the embedded server (this runs while reporting that a server is gone)."""
    if settings is None:
        return "the configured server"
    if not settings.database_url:
        return f"the embedded server under {settings.pgdata}"
    try:
        return normalise_url(settings.database_url).render_as_string(hide_password=True)
    except DatabaseConfigError:
        return "the configured server"
