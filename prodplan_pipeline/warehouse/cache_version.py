"""The version the API's caches are keyed on (``ops.cache_version``): every step that changes what
the API serves bumps it in its own transaction (the snapshot's commit, the derived values, the
gates, each analytics layer), so a cached answer never outlives the data it was computed from.
Here, below every room that writes, because each of them bumps it."""

from __future__ import annotations

CACHE_VERSION_CHANNEL = "prodplan_cache_version"


def bump_cache_version(conn) -> int:
    """API caches are keyed on this version: a refresh that committed invalidates them. The
    NOTIFY is delivered at commit, so listening API processes see the new version at once."""
    with conn.cursor() as cur:
        cur.execute("UPDATE ops.cache_version SET version = version + 1, updated_at = now() RETURNING version")
        version = cur.fetchone()[0]
        cur.execute("SELECT pg_notify(%s, %s)", (CACHE_VERSION_CHANNEL, str(version)))
        return version
