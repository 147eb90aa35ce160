"""What a data engineer sees in the Dagster UI is what the warehouse holds.

One real `dagster dev` (webserver + daemon), started the plain way in the repository root with
no DAGSTER_HOME, on real PostgreSQL storage, after a first load by `prodplan ingest`; every
assertion goes through the webserver's GraphQL over HTTP, or through a local webhook that the
daemon's sensors post alerts to.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import openpyxl
import pytest

from prodplan_pipeline.analytics.current import CURRENT_LAYERS
from prodplan_pipeline.orchestration.daily_partitions import partition_bounds
from prodplan_pipeline.warehouse import Warehouse
from prodplan_pipeline.workbook.sample import write_sample
from prodplan_pipeline_tests.conftest import PRODPLAN_VARIABLES, REPO_ROOT, run_cli, run_cli_forked
from prodplan_pipeline_tests.webhook import Webhook

STARTUP_SECONDS = 180
DAILY_AGGREGATES = ("agg_phase_stats_daily", "agg_order_stats_daily", "agg_quality_daily")
LOCATION = {"repositoryLocationName": "prodplan", "repositoryName": "__repository__"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DagsterUI:
    """`dagster dev` in the repository root, stopped with its whole process group."""

    def __init__(self, env: dict[str, str], log_path):
        self.port = free_port()
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.log_path = log_path

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        assert "errors" not in answer, answer
        return answer["data"]

    def wait_until_loaded(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                data = self.graphql(
                    "{ workspaceOrError { ... on Workspace { locationEntries { "
                    "locationOrLoadError { __typename } } } } }"
                )
                entries = data["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation":
                    return
                if entries and entries[0]["locationOrLoadError"]["__typename"] == "PythonError":
                    pytest.fail(f"the code location failed to load: {self.log_path.read_text()}")
            except OSError:
                pass
            time.sleep(1)
        pytest.fail(f"dagster dev did not load within {STARTUP_SECONDS} s: {self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            # Nothing here tests its shutdown (test_ui_command does), and a SIGINT took the
            # whole 10 s allowed before the kill anyway: the process group is killed at once.
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.log.close()


def wait_for(what: str, probe, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(2)
    pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def loaded_ui(databases, tmp_path_factory):
    """A first load by `prodplan ingest`, then `dagster dev` on the same storage."""
    home = tmp_path_factory.mktemp("ui")
    hook = Webhook()
    workbook = home / "Folha_IA.xlsx"
    write_sample(workbook, scale=0.005, seed=3)
    warehouse_url = databases.create("ui")
    env = {k: v for k, v in os.environ.items() if k not in PRODPLAN_VARIABLES}
    env.update(
        PRODPLAN_HOME=str(home / "home"),
        PRODPLAN_WORKBOOK=str(workbook),
        PRODPLAN_DATABASE_URL=warehouse_url.render_as_string(hide_password=False),
        PRODPLAN_DAGSTER_DATABASE=databases.dagster_storage("dagster").database,
        PRODPLAN_ALERT_WEBHOOK_URL=hook.url,
        # stale a minute after each ingestion (the shortest window Dagster's freshness
        # policies take), evaluated by the daemon every 2 s instead of 30
        PRODPLAN_FRESHNESS_HOURS="0.0167",
        FRESHNESS_DAEMON_INTERVAL_SECONDS="2",
        # the alert sensors tick every 2 s instead of 30: an alert within seconds
        PRODPLAN_ALERT_INTERVAL_SECONDS="2",
    )
    first = run_cli_forked(["ingest", "--workbook", str(workbook)], env)
    assert first.returncode == 0, first.stdout + first.stderr
    ui = DagsterUI(env, home / "dagster-dev.log")
    try:
        ui.wait_until_loaded()
        yield ui, hook, env, Warehouse(warehouse_url)
    finally:
        ui.stop()
        hook.shutdown()


PARTITION_STATS = """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) {
    ... on AssetNode { partitionStats { numMaterialized numPartitions numFailed } } } }"""
LATEST = """query($key: AssetKeyInput!) { assetOrError(assetKey: $key) { ... on Asset {
    assetMaterializations(limit: 1) { runId metadataEntries { label
        ... on IntMetadataEntry { intValue } } } } } }"""


def test_a_first_load_shows_every_day_up_to_the_last_with_data_as_materialized(loaded_ui):
    ui, _, _, warehouse = loaded_ui
    first, end = partition_bounds()
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT max(day) FROM ops.changed_days WHERE day >= %s AND day < %s", (first, end))
        last_with_data = cur.fetchone()[0]
    expected = (last_with_data - first).days + 1
    assert expected > 365  # years of history: a real backfill, not a handful of days
    for table in DAILY_AGGREGATES:
        stats = ui.graphql(PARTITION_STATS, {"key": {"path": ["analytics", table]}})
        stats = stats["assetNodeOrError"]["partitionStats"]
        assert (stats["numMaterialized"], stats["numFailed"]) == (expected, 0), table
    for current in (*(layer.name for layer in CURRENT_LAYERS.values()), "materialized_views"):
        latest = ui.graphql(LATEST, {"key": {"path": ["analytics", current]}})
        assert latest["assetOrError"]["assetMaterializations"], current


def test_row_count_metadata_equals_the_table(loaded_ui):
    ui, _, _, warehouse = loaded_ui
    for table in ("ordens_fabrico", "fases_ordem_fabrico", "erros_ordem_fabrico"):
        latest = ui.graphql(LATEST, {"key": {"path": ["core", table]}})
        entries = latest["assetOrError"]["assetMaterializations"][0]["metadataEntries"]
        row_count = {e["label"]: e.get("intValue") for e in entries}["dagster/row_count"]
        with warehouse.connect() as conn, conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM core.{table}")  # names from this test, not input
            assert row_count == cur.fetchone()[0], table


SENSOR_TICKS = """query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
    ... on Sensor { sensorState { ticks(limit: 1) { status } } } } }"""
RUNS = """query($job: String!) { runsOrError(filter: {pipelineName: $job}) { ... on Runs {
    results { runId status tags { key value } } } } }"""


def _ticked(ui: DagsterUI, sensor: str) -> bool:
    data = ui.graphql(SENSOR_TICKS, {"selector": {**LOCATION, "sensorName": sensor}})
    return bool(data["sensorOrError"]["sensorState"]["ticks"])


def test_a_failed_cli_ingest_alerts_through_the_daemons_run_failure_sensor(loaded_ui, tmp_path):
    ui, hook, env, _ = loaded_ui
    # a run-failure sensor starts from its first tick: fail the ingest after it
    wait_for("the run-failure sensor's first tick", lambda: _ticked(ui, "run_failure_alert_sensor"), 120)
    broken = tmp_path / "broken.xlsx"  # a real workbook without the export's sheets
    workbook = openpyxl.Workbook()
    workbook.active.title = "Outra"
    workbook.save(broken)
    failed = run_cli(["ingest", "--workbook", str(broken), "--json"], env)
    assert failed.returncode != 0
    run_id = json.loads(failed.stdout)["dagster_run_id"]

    def alerted():
        return [b for b in hook.bodies if b.get("kind") == "run_failed" and b.get("run_id") == run_id]

    (alert,) = wait_for(f"the alert for failed run {run_id}", alerted, 150)
    assert alert["job_name"] == "ingest_workbook" and "broken.xlsx" in alert["text"]
    runs = ui.graphql(RUNS, {"job": "ingest_workbook"})["runsOrError"]["results"]
    assert {r["runId"]: r["status"] for r in runs}[run_id] == "FAILURE"


FRESHNESS = """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) {
    ... on AssetNode { freshnessStatusInfo { freshnessStatus } } } }"""


def test_a_stale_workbook_and_core_table_fail_their_freshness_policies_and_alert(loaded_ui):
    """The daemon's freshness daemon evaluates the policies; open-source Dagster alerts on no
    freshness failure by itself, so the check alert sensor must see it."""
    ui, hook, _, _ = loaded_ui

    def status(path: list[str]) -> str:
        node = ui.graphql(FRESHNESS, {"key": {"path": path}})["assetNodeOrError"]
        return node["freshnessStatusInfo"]["freshnessStatus"]

    def alerted(asset: str):
        return [b for b in hook.bodies if b.get("kind") == "freshness_failed" and b["asset"] == asset]

    wait_for("the workbook's freshness alert", lambda: alerted("workbook"), 150)
    wait_for("a core table's freshness alert", lambda: alerted("core/fases_ordem_fabrico"), 30)
    assert status(["workbook"]) == status(["core", "fases_ordem_fabrico"]) == "DEGRADED"
    assert "no ingestion updated it within 0.0167 h" in alerted("workbook")[0]["text"]
    assert (
        ui.graphql(FRESHNESS, {"key": {"path": ["analytics", "agg_wip_current"]}})["assetNodeOrError"][
            "freshnessStatusInfo"
        ]
        is None
    ), "only the workbook and the core tables carry a policy"


def test_the_workbook_sensor_does_not_re_ingest_what_the_cli_ingested(loaded_ui):
    ui, _, _, _ = loaded_ui
    wait_for("the workbook sensor's first tick", lambda: _ticked(ui, "workbook_sensor"), 120)
    runs = ui.graphql(RUNS, {"job": "ingest_workbook"})["runsOrError"]["results"]
    launched_by_sensor = [r for r in runs if {"key": "dagster/sensor_name", "value": "workbook_sensor"} in r["tags"]]
    assert runs and not launched_by_sensor


def test_plain_dagster_dev_warns_of_no_second_instance_configuration(loaded_ui):
    ui, _, _, _ = loaded_ui
    log = ui.log_path.read_text()
    assert "Launching Dagster services" in log
    assert "Found a dagster instance configuration" not in log
    assert "Traceback" not in log, log
