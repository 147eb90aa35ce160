"""Apply the ordered SQL files of ``sql/migrations`` once each, recorded in ``ops.schema_migrations``.

Runs under an advisory lock so that two processes starting at once (the UI, a CLI run, a test)
apply each file exactly once; the second waits and then finds nothing left to do. A file that was
edited after it was applied is refused rather than silently skipped: schema changes go into a new
file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prodplan_pipeline.paths import migrations_dir
from prodplan_pipeline.warehouse.locks import MIGRATIONS_LOCK, advisory_lock

_FILENAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILENAME.match(path.name)
        if not match:
            raise MigrationError(f"{path} is not named NNN_snake_case.sql")
        found.append(Migration(version=match.group(1), path=path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version number in {directory}")
    return found


def applied_checksums(conn) -> dict[str, str]:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('ops.schema_migrations') IS NOT NULL")
        if not cur.fetchone()[0]:
            return {}
        cur.execute("SELECT version, checksum FROM ops.schema_migrations")
        return dict(cur.fetchall())


def apply_migrations(conn, directory: Path | None = None, log: Callable[[str], None] | None = None) -> list[str]:
    """Apply pending migrations in order, each in its own transaction; return their versions."""
    migrations = discover(directory)
    applied_now = []
    with advisory_lock(conn, MIGRATIONS_LOCK, on_wait=log):
        done = applied_checksums(conn)
        for migration in migrations:
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"{migration.path.name} changed after it was applied; "
                        "put schema changes in a new migration file"
                    )
                continue
            _apply_one(conn, migration)
            applied_now.append(migration.version)
            if log:
                log(f"applied migration {migration.path.name}")
    return applied_now


def _apply_one(conn, migration: Migration) -> None:
    try:
        with conn.cursor() as cur:
            cur.execute(migration.sql)
            cur.execute(
                "INSERT INTO ops.schema_migrations (version, filename, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.path.name, migration.checksum),
            )
        conn.commit()
    except Exception as exc:
        conn.rollback()
        raise MigrationError(f"migration {migration.path.name} failed: {exc}") from exc
