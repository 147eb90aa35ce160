"""Whether a workbook is the snapshot the warehouse already reflects, in every layer.

Then `prodplan ingest` has nothing to do: it answers from a few queries (~0.5 s) instead of
starting Dagster (~6 s of imports, run bookkeeping and checks that would all find nothing new).
Any layer behind the snapshot (a killed run, a failed check step, a report deleted, a pending
day) sends the command the whole way, which repairs it.
"""

from __future__ import annotations

import socket
from datetime import date
from pathlib import Path

import psycopg2

from prodplan_pipeline import watermarks
from prodplan_pipeline.analytics.convergence import daily_window, lagging_layers, pending_days
from prodplan_pipeline.contract import SHEETS
from prodplan_pipeline.ingest import runs
from prodplan_pipeline.quality.dictionary import REPORT_NAME as DICTIONARY_REPORT
from prodplan_pipeline.quality.expectations import needs_validation
from prodplan_pipeline.quality.gates import REPORT_NAME as GATES_REPORT
from prodplan_pipeline.settings import Settings
from prodplan_pipeline.warehouse.connection import libpq_dsn, server_url
from prodplan_pipeline.warehouse.urls import DatabaseConfigError, normalise_url

# The layers after the commit that keep a watermark of the snapshot they reflect.
QUALITY_LAYERS = ("data_quality_issues", "feature_gates", "data_dictionary")
UNFINISHED_RUNS = "SELECT EXISTS (SELECT 1 FROM ops.ingestion_runs WHERE status = 'running')"


def reflected_run(conn, sha256: str, reports: Path, partitions_start: date) -> int | None:
    """The ingestion run whose snapshot is this workbook (by SHA-256) when every layer reflects
    it, else None. Call under the ingestion lock (a 'running' run is then an interrupted one)."""
    last = runs.last_ingested(conn)
    if last is None or last[1] != sha256 or _unfinished(conn):
        return None
    change = watermarks.last_core_change(conn)
    if any(watermarks.read(conn, layer) != str(change) for layer in QUALITY_LAYERS):
        return None
    if any(needs_validation(conn, s) for s in SHEETS) or lagging_layers(conn):
        return None
    if pending_days(conn, *daily_window(partitions_start)):
        return None  # e.g. a day that only became a partition today
    if not all((reports / name).exists() for name in (GATES_REPORT, DICTIONARY_REPORT)):
        return None
    return last[0]


def _unfinished(conn) -> bool:
    with conn.cursor() as cur:
        cur.execute(UNFINISHED_RUNS)
        return cur.fetchone()[0]


# The tags of a Dagster run that a `prodplan` command executes in its own process (set by
# orchestration/interrupted.cli_run_tags, which closes such a run once its process is gone).
LAUNCHED_BY_TAG, PID_TAG, HOST_TAG = "prodplan/launched_by", "prodplan/pid", "prodplan/host"
CLI_LAUNCHER = "prodplan-cli"
UNCLOSED_CLI_RUNS = """
    SELECT EXISTS (
        SELECT 1 FROM runs r
        JOIN run_tags launcher ON launcher.run_id = r.run_id AND launcher.key = %(launched_by)s
                              AND launcher.value = %(cli)s
        JOIN run_tags host ON host.run_id = r.run_id AND host.key = %(host_tag)s AND host.value = %(host)s
        WHERE r.status IN ('NOT_STARTED', 'STARTING', 'STARTED'))"""


def unclosed_cli_runs(settings: Settings) -> bool:
    """Whether Dagster still holds a run that a `prodplan` command on this host started and
    never ended. Asked under the ingestion lock, when no such command runs: the command was
    killed (perhaps after every layer was written). Only the whole way closes it
    (orchestration/interrupted.py), so the quick answer must not be given."""
    url = settings.dagster_storage_url or server_url(settings, settings.dagster_database)
    try:
        conn = psycopg2.connect(libpq_dsn(normalise_url(url)))
    except psycopg2.OperationalError:  # no Dagster storage yet: no run to close
        return False
    except DatabaseConfigError:  # not a PostgreSQL URL: no run of ours can be there (Dagster says so when it starts)
        return False
    try:
        with conn.cursor() as cur:
            cur.execute(
                UNCLOSED_CLI_RUNS,
                {
                    "launched_by": LAUNCHED_BY_TAG,
                    "cli": CLI_LAUNCHER,
                    "host_tag": HOST_TAG,
                    "host": socket.gethostname(),
                },
            )
            return cur.fetchone()[0]
    except psycopg2.errors.UndefinedTable:  # a storage Dagster has not initialised
        return False
    finally:
        conn.close()
