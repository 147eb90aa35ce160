"""The Dagster code location: it loads, validates, and its jobs run against a real database."""

from __future__ import annotations

import os
import subprocess
import sys

from prodplan_pipeline.orchestration.definitions import defs
from prodplan_pipeline.orchestration.resources import WarehouseResource
from prodplan_pipeline.warehouse.partitions import partition_summary
from prodplan_pipeline_tests.conftest import PRODPLAN_VARIABLES, REPO_ROOT


def test_dagster_definitions_validate_against_postgres_storage(databases):
    """`dagster definitions validate -w workspace.yaml` as a user runs it, in the repo root,
    with dagster.yaml's PostgreSQL storage pointed at a fresh database."""
    storage = databases.create("dagster")
    env = {k: v for k, v in os.environ.items() if k not in PRODPLAN_VARIABLES}
    env["PRODPLAN_DAGSTER_STORAGE_URL"] = storage.render_as_string(hide_password=False)
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr


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
