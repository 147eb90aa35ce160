"""The Dagster code location: it loads, validates, and its jobs run against a real database."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from prodplan_pipeline.orchestration.definitions import defs
from prodplan_pipeline.orchestration.resources import WarehouseResource
from prodplan_pipeline.warehouse.embedded import stop_embedded_server
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


def _fresh_checkout(target) -> None:
    """The repository's files as a clone has them (tracked and new, not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
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
        result = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate"],
                                cwd=clone, env=env, capture_output=True, text=True, timeout=300)
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


# The asset graph as a data engineer sees it in the UI: a change here is a change of the public
# shape of the pipeline and should be deliberate (update this snapshot in the same commit).
GRAPH_SNAPSHOT = {
    "raw": ["raw/erros_ordem_fabrico", "raw/fases_catalogo", "raw/fases_ordem_fabrico",
            "raw/fases_standard_modelos", "raw/funcionarios", "raw/funcionarios_fase_ordem_fabrico",
            "raw/funcionarios_fases_aptos", "raw/modelos", "raw/ordens_fabrico", "workbook"],
    "core": ["core/erros_ordem_fabrico", "core/fases_catalogo", "core/fases_ordem_fabrico",
             "core/fases_standard_modelos", "core/funcionarios", "core/funcionarios_fase_ordem_fabrico",
             "core/funcionarios_fases_aptos", "core/modelos", "core/ordens_fabrico"],
    "derived": ["derived/data_quality_issues", "derived/erros_ordem_fabrico",
                "derived/fases_ordem_fabrico", "derived/ordens_fabrico"],
    "quality": ["quality/data_dictionary", "quality/feature_gates"],
    "analytics": ["analytics/agg_order_stats_daily", "analytics/agg_phase_stats_daily",
                  "analytics/agg_quality_daily", "analytics/agg_wip_current",
                  "analytics/materialized_views"],
}


def test_asset_graph_snapshot():
    graph = defs.resolve_asset_graph()
    groups: dict[str, list[str]] = {}
    for key in graph.get_all_asset_keys():
        groups.setdefault(graph.get(key).group_name, []).append(key.to_user_string())
    assert {g: sorted(keys) for g, keys in groups.items()} == GRAPH_SNAPSHOT
    checks = sorted(c.to_user_string() for c in graph.asset_check_keys)
    core = GRAPH_SNAPSHOT["core"]
    assert checks == sorted([f"{k}:count_reconciliation" for k in core]
                            + [f"{k}:data_expectations" for k in core]
                            + [f"{k}:freshness_check" for k in [*core, "workbook"]]
                            + [f"quality/feature_gates:gate_{f}" for f in (
                                "kpis_by_employee", "kpis_by_product_attributes", "phases_by_order",
                                "quality_by_order", "quality_by_phase_timing")])
    # every asset explains itself in the UI and says who owns it
    for key in graph.get_all_asset_keys():
        spec = graph.get(key)
        assert spec.description and len(spec.description) > 40, key
        assert spec.owners, key


def test_loading_the_code_location_does_not_import_great_expectations():
    code = ("import sys, prodplan_pipeline.orchestration.definitions; "
            "print('great_expectations' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_refresh_ranges_merge_the_smallest_gaps_first():
    from datetime import date, timedelta

    from prodplan_pipeline.orchestration.partitions import contiguous_ranges, refresh_ranges

    day = date(2024, 3, 1)
    days = [day, day + timedelta(1), day + timedelta(5), day + timedelta(6), day + timedelta(30)]
    assert contiguous_ranges(days) == [(day, day + timedelta(1)), (day + timedelta(5), day + timedelta(6)),
                                       (day + timedelta(30), day + timedelta(30))]
    assert refresh_ranges(days, max_runs=2) == [(day, day + timedelta(6)),
                                                (day + timedelta(30), day + timedelta(30))]
    assert refresh_ranges(days, max_runs=3) == contiguous_ranges(days)
    # merged ranges that cover most of the span anyway: one run over the span
    spread = [day + timedelta(n) for n in range(0, 100) if n % 3]
    assert len(contiguous_ranges(spread)) == 33
    assert refresh_ranges(spread, max_runs=8) == [(spread[0], spread[-1])]
    # far-apart clusters stay separate runs
    clusters = [day + timedelta(n) for start in range(0, 900, 100) for n in range(start, start + 3)]
    assert len(refresh_ranges(clusters, max_runs=8)) == 8
