"""A configured database URL, parsed and refused in one sentence when it cannot be the warehouse.
Its own module so that the connections and the lost-database messages both use it without
importing each other."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url


class DatabaseConfigError(ValueError):
    """The configured database cannot serve as ProdPlan's warehouse (a user error, not a bug)."""


def normalise_url(url: str) -> URL:
    """Parse a configured URL; refuse anything that is not PostgreSQL with one clear sentence."""
    try:
        parsed = make_url(url)
    except Exception:
        raise DatabaseConfigError(
            f"PRODPLAN_DATABASE_URL is not a valid database URL ({url!r}); expected "
            "postgresql://user@host:port/database."
        ) from None
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise DatabaseConfigError(
            f"PRODPLAN_DATABASE_URL points at {parsed.get_backend_name()!r}, but ProdPlan's "
            "warehouse must be PostgreSQL 15 or newer (postgresql://user@host:port/database); "
            "unset it to use the embedded PostgreSQL server."
        )
    return parsed.set(drivername="postgresql+psycopg2")
