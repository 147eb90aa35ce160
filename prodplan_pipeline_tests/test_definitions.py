"""The Dagster code location: it loads, validates, and its jobs run against a real database."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from prodplan_pipeline.analytics.aggregates import AGGREGATES
from prodplan_pipeline.contract import SHEETS
from prodplan_pipeline.orchestration.daily_partitions import PARTITIONS_START
from prodplan_pipeline.orchestration.definitions import defs
from prodplan_pipeline.orchestration.resources import WarehouseResource
from prodplan_pipeline.settings import Settings
from prodplan_pipeline.warehouse.embedded import stop_embedded_server
from prodplan_pipeline.warehouse.monthly_partitions import partition_summary
from prodplan_pipeline_tests.conftest import PRODPLAN_VARIABLES, REPO_ROOT, developer_settings
from prodplan_pipeline_tests.definitions_snapshot import describe


def test_dagster_definitions_validate_against_postgres_storage(databases):
    """`dagster definitions validate -w workspace.yaml` as a user runs it, in the repo root,
    with dagster.yaml's PostgreSQL storage pointed at a fresh database."""
    storage = databases.create("dagster")
    env = {k: v for k, v in os.environ.items() if k not in PRODPLAN_VARIABLES}
    env["PRODPLAN_DAGSTER_STORAGE_URL"] = storage.render_as_string(hide_password=False)
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr


def _fresh_checkout(target) -> None:
    """The repository's files as a clone has them (tracked and new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target / name)


def test_plain_dagster_definitions_validate_in_a_fresh_clone_with_no_environment(tmp_path):
    """No PRODPLAN_* or DAGSTER_* variable at all: dagster.yaml's storage starts the embedded
    server under ./.prodplan of the clone, as `prodplan` would, and validation passes."""
    clone = tmp_path / "clone"
    _fresh_checkout(clone)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRODPLAN_", "DAGSTER_"))}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "dagster", "definitions", "validate"],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        stop_embedded_server(clone / ".prodplan" / "pgdata")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "All code locations passed validation" in output
    assert "Traceback" not in output and "Found a dagster instance configuration" not in output
    assert (clone / ".prodplan" / "pgdata").is_dir()  # the project's storage, not a stand-in


def test_warehouse_maintenance_job_migrates_and_creates_partitions(databases):
    url = databases.create("maintenance")
    job = defs.resolve_job_def("warehouse_maintenance_job")
    resource = WarehouseResource(database_url=url.render_as_string(hide_password=False))
    result = job.execute_in_process(resources={"warehouse": resource})
    assert result.success
    with resource.get_warehouse().connect() as conn:
        summary = partition_summary(conn)
    assert summary["partitions"] >= 7  # this month and six ahead
    assert summary["default_rows"] == 0


SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def test_the_definitions_equal_their_snapshot():
    """Assets, checks, jobs, schedules and sensors as the UI shows them. A change here is a change
    of the pipeline's public shape: regenerate with PRODPLAN_UPDATE_SNAPSHOT=1 and review the diff."""
    described = describe(defs)
    if os.environ.get("PRODPLAN_UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(json.dumps(described, indent=1, ensure_ascii=False) + "\n")
    assert described == json.loads(SNAPSHOT.read_text()), (
        f"the definitions differ from {SNAPSHOT.name}: rerun with PRODPLAN_UPDATE_SNAPSHOT=1 and review the diff"
    )


def test_the_suite_sees_none_of_the_developers_settings():
    """What the snapshot above describes is the default deployment, whatever the shell that ran
    the tests had set (conftest removes those variables before anything reads them)."""
    assert developer_settings(os.environ) == []
    assert PARTITIONS_START == Settings(home=Path("unused")).partitions_start.isoformat()


def test_every_asset_explains_itself_and_names_its_owner():
    for name, asset in describe(defs)["assets"].items():
        assert asset["description"] and len(asset["description"]) > 40, name
        assert asset["owners"], name


def test_every_sheet_has_its_count_check_blocking_and_its_expectations_warning():
    checks = describe(defs)["checks"]
    for s in SHEETS:
        assert checks[f"core/{s.table}:count_reconciliation"]["blocking"] is True, s.name
        assert checks[f"core/{s.table}:data_expectations"]["blocking"] is False, s.name


def test_every_aggregate_is_an_asset_of_its_registry_entry():
    assets = describe(defs)["assets"]
    for aggregate in AGGREGATES.values():
        asset = assets[f"analytics/{aggregate.name}"]
        assert asset["upstream"] == sorted(t.replace(".", "/") for t in aggregate.reads)
        assert aggregate.description in asset["description"] and asset["partitions"].startswith("Daily")


def test_the_readme_lists_every_aggregate_from_its_registry_entry():
    readme = (REPO_ROOT / "README.md").read_text()
    for aggregate in AGGREGATES.values():
        assert aggregate.readme_row() in readme, aggregate.table


def test_loading_the_code_location_does_not_import_great_expectations():
    code = "import sys, prodplan_pipeline.orchestration.definitions; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_refresh_ranges_merge_the_smallest_gaps_first():
    from datetime import date, timedelta

    from prodplan_pipeline.analytics.convergence import contiguous_ranges, refresh_ranges

    day = date(2024, 3, 1)
    days = [day, day + timedelta(1), day + timedelta(5), day + timedelta(6), day + timedelta(30)]
    assert contiguous_ranges(days) == [
        (day, day + timedelta(1)),
        (day + timedelta(5), day + timedelta(6)),
        (day + timedelta(30), day + timedelta(30)),
    ]
    assert refresh_ranges(days, max_runs=2) == [(day, day + timedelta(6)), (day + timedelta(30), day + timedelta(30))]
    assert refresh_ranges(days, max_runs=3) == contiguous_ranges(days)
    # merged ranges that cover most of the span anyway: one run over the span
    spread = [day + timedelta(n) for n in range(0, 100) if n % 3]
    assert len(contiguous_ranges(spread)) == 33
    assert refresh_ranges(spread, max_runs=8) == [(spread[0], spread[-1])]
    # far-apart clusters stay separate runs
    clusters = [day + timedelta(n) for start in range(0, 900, 100) for n in range(start, start + 3)]
    assert len(refresh_ranges(clusters, max_runs=8)) == 8


def test_the_daily_window_is_dagsters_daily_partitions():
    """analytics.convergence.daily_window computes the partitions' bounds without Dagster (the
    warehouse-side rooms and the CLI's unchanged-workbook answer use it); it must stay the
    first and the last window of the DAILY partitions definition the assets use."""
    from prodplan_pipeline.orchestration.daily_partitions import DAILY, partition_bounds

    assert partition_bounds() == (
        DAILY.get_first_partition_window().start.date(),
        DAILY.get_last_partition_window().end.date(),
    )
