"""Shared fixtures: a real PostgreSQL for every test session, never a stand-in.

With ``PRODPLAN_TEST_DATABASE_URL`` set (CI: the PostgreSQL service on 127.0.0.1:5432) tests use
that server; otherwise they start the embedded server (pgserver) in a temporary folder. Either
way each session works in fresh databases of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql
from sqlalchemy.engine import URL

from prodplan_pipeline.warehouse import Warehouse
from prodplan_pipeline.warehouse.connection import libpq_dsn, ensure_database, normalise_url
from prodplan_pipeline.warehouse.embedded import embedded_server_uri, stop_embedded_server

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_SERVER_VARIABLE = "PRODPLAN_TEST_DATABASE_URL"
# Variables of the user's environment that must not leak into the code under test.
PRODPLAN_VARIABLES = ("PRODPLAN_DATABASE_URL", "PRODPLAN_HOME", "PRODPLAN_WORKBOOK",
                      "PRODPLAN_REPORTS_DIR", "DAGSTER_HOME", "PRODPLAN_DAGSTER_STORAGE_URL",
                      "PRODPLAN_DAGSTER_DATABASE")


@pytest.fixture(scope="session")
def server_url(tmp_path_factory) -> URL:
    """The server under test (its URL names a maintenance database, not a test database)."""
    configured = os.environ.get(TEST_SERVER_VARIABLE)
    if configured:
        yield normalise_url(configured)
        return
    pgdata = tmp_path_factory.mktemp("embedded") / "pgdata"
    yield normalise_url(embedded_server_uri(pgdata))
    stop_embedded_server(pgdata)


class Databases:
    """Creates uniquely named databases on the test server and drops them at the end."""

    def __init__(self, server: URL):
        self.server = server
        self.created: list[URL] = []

    def create(self, purpose: str) -> URL:
        url = self.server.set(database=f"prodplan_test_{purpose}_{uuid.uuid4().hex[:8]}")
        ensure_database(url)
        self.created.append(url)
        return url

    def warehouse(self, purpose: str) -> Warehouse:
        """A fresh database with the project's schema applied."""
        wh = Warehouse(self.create(purpose))
        wh.migrate()
        return wh

    def drop(self, url: URL) -> None:
        admin = psycopg2.connect(libpq_dsn(self.server.set(database="postgres")))
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(url.database)))
        admin.close()

    def drop_all(self) -> None:
        for url in self.created:
            self.drop(url)


@pytest.fixture(scope="session")
def databases(server_url) -> Databases:
    registry = Databases(server_url)
    yield registry
    registry.drop_all()


@pytest.fixture(scope="session")
def warehouse(databases) -> Warehouse:
    """The session's migrated warehouse database."""
    wh = databases.warehouse("warehouse")
    yield wh
    wh.dispose()


@pytest.fixture
def empty_database(databases) -> URL:
    """A fresh, empty database for one test (for migration tests)."""
    url = databases.create("empty")
    yield url
    databases.drop(url)


@pytest.fixture
def clean_env(monkeypatch, tmp_path) -> dict[str, str]:
    """An environment without the user's PRODPLAN_* settings, with a private PRODPLAN_HOME."""
    for name in PRODPLAN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PRODPLAN_HOME", str(tmp_path / "home"))
    return dict(os.environ)


@pytest.fixture
def cli_env(clean_env, databases) -> dict[str, str]:
    """Environment for `prodplan` subprocesses: a fresh warehouse database and a fresh Dagster
    storage database on the test server, and a private PRODPLAN_HOME."""
    warehouse = databases.create("cli")
    dagster = databases.create("dagster")
    return {**clean_env, "PRODPLAN_DATABASE_URL": warehouse.render_as_string(hide_password=False),
            "PRODPLAN_DAGSTER_DATABASE": dagster.database}


def run_cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``prodplan`` in a real subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "prodplan_pipeline.cli", *args], env=env,
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
