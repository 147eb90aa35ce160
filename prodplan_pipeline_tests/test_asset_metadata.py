"""What Dagster shows is what the warehouse holds: table names and column schemas on the asset
definitions agree with the migrated database and the contract, and after real runs of the ingest
job (a first load, a changed workbook, the same workbook again) every row count equals
SELECT count(*) of its table and the per-run figures follow what changed."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from dagster import DagsterInstance, FloatMetadataValue, IntMetadataValue

from prodplan_pipeline.contract import SHEETS, sheet
from prodplan_pipeline.orchestration.daily_partitions import INGEST_JOB
from prodplan_pipeline.orchestration.definitions import defs
from prodplan_pipeline.orchestration.ingestion import core_key, raw_key
from prodplan_pipeline.orchestration.quality import EXPECTATIONS, FEATURE_GATES, gate_check_name
from prodplan_pipeline.orchestration.resources import (
    IngestionLockResource,
    SettingsResource,
    WarehouseResource,
    WorkbookResource,
)
from prodplan_pipeline.orchestration.table_metadata import COLUMN_SCHEMA, ROW_COUNT, TABLE_NAME
from prodplan_pipeline.quality.gates import GATES
from prodplan_pipeline.workbook.sample import write_sample
from prodplan_pipeline_tests.conftest import PRODPLAN_VARIABLES
from prodplan_pipeline_tests.warehouse_queries import query
from prodplan_pipeline_tests.workbook_edit import edited, header_index

GRAPH = defs.resolve_asset_graph()
TABLES = {
    key: GRAPH.get(key).metadata[TABLE_NAME]
    for key in GRAPH.get_all_asset_keys()
    if TABLE_NAME in GRAPH.get(key).metadata
}
COLUMNS = """
    SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns
    WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position"""
MODELS, ROUTES = sheet("Modelos"), sheet("FasesStandardModelos")
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def schema_of(key):
    return GRAPH.get(key).metadata[COLUMN_SCHEMA].schema


# --- definition metadata -------------------------------------------------------------------------


def test_every_declared_table_and_column_exists_as_declared(warehouse):
    assert {core_key(s) for s in SHEETS} | {raw_key(s) for s in SHEETS} <= set(TABLES)
    for key, table in TABLES.items():
        actual = {
            name: (sql_type, nullable)
            for name, sql_type, nullable in query(warehouse, COLUMNS, tuple(table.split(".")))
        }
        assert actual, f"{key.to_user_string()}: {table} does not exist"
        if COLUMN_SCHEMA not in GRAPH.get(key).metadata:
            continue
        declared = {c.name: (c.type, c.constraints.nullable) for c in schema_of(key).columns}
        if key.path[0] == "derived":  # the computed columns of a core table
            assert declared.items() <= actual.items(), key
        else:
            assert declared == actual, key


@pytest.mark.parametrize("s", SHEETS, ids=lambda s: s.name)
def test_core_column_schema_is_the_contract(s):
    schema = schema_of(core_key(s))
    assert [(c.name, c.type, not c.constraints.nullable) for c in schema.columns] == list(s.core_columns)
    assert all(c.description for c in schema.columns)
    assert [c.name for c in schema.columns if c.constraints.unique] == (
        list(s.key_names) if len(s.key_names) == 1 else []
    )
    assert ", ".join(s.key_names) in schema.constraints.other[0]
    staging = schema_of(raw_key(s))
    assert [c.name for c in staging.columns][4:] == list(s.column_names)


# --- materialization metadata: three real runs of the ingest job ----------------------------------


@dataclass
class Run:
    materialized: dict  # asset key -> metadata of its materialization in this run
    counts: dict  # asset key -> SELECT count(*) of its table right after the run
    checks: dict  # asset check key -> metadata of its evaluation in this run


def ingest(instance, url: str, workbook, warehouse) -> Run:
    resource = WarehouseResource(database_url=url)
    result = defs.resolve_job_def(INGEST_JOB).execute_in_process(
        instance=instance,
        run_config=QUIET,
        resources={
            "warehouse": resource,
            "workbook_file": WorkbookResource(path=str(workbook)),
            "ingestion_lock": IngestionLockResource(warehouse=resource),
        },
    )
    assert result.success
    materialized = {e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()}
    counts = {
        key: query(warehouse, f"SELECT count(*) FROM {TABLES[key]}")[0][0] for key in materialized if key in TABLES
    }
    checks = {e.asset_check_key: e.metadata for e in result.get_asset_check_evaluations()}
    return Run(materialized, counts, checks)


def change_a_name_and_break_a_coefficient(book):
    models = book[MODELS.name]
    models.cell(2, header_index(models, "Produto_Nome")).value = "renamed in the ERP"
    routes = book[ROUTES.name]
    routes.cell(2, header_index(routes, "ProdutoFase_Coeficiente")).value = "not a number"


@pytest.fixture(scope="module")
def runs(databases, tmp_path_factory):
    folder = tmp_path_factory.mktemp("metadata")
    with pytest.MonkeyPatch.context() as env:
        for name in PRODPLAN_VARIABLES:
            env.delenv(name, raising=False)
        env.setenv("PRODPLAN_HOME", str(folder / "home"))
        warehouse = databases.warehouse("metadata")
        url = warehouse.url.render_as_string(hide_password=False)
        first_book = folder / "first.xlsx"
        write_sample(first_book, scale=0.005, seed=3)
        changed = edited(first_book, folder / "changed.xlsx", change_a_name_and_break_a_coefficient)
        with DagsterInstance.ephemeral() as instance:
            done = [ingest(instance, url, book, warehouse) for book in (first_book, changed, changed)]
            latest = {
                s: instance.get_latest_materialization_event(core_key(s)).asset_materialization.metadata for s in SHEETS
            }
        yield done, latest, warehouse, folder / "home" / "reports"


def value(metadata, key):
    entry = metadata[key]
    assert isinstance(entry, (IntMetadataValue, FloatMetadataValue)), (key, entry)
    return entry.value


def test_every_row_count_is_the_tables_count_after_each_run(runs):
    done, latest, warehouse, _ = runs
    for run in done:
        assert run.counts and set(run.counts) == {k for k, m in run.materialized.items() if ROW_COUNT in m}
        for key, count in run.counts.items():
            assert value(run.materialized[key], ROW_COUNT) == count, key.to_user_string()
    for s in SHEETS:  # the latest materialization in the instance, as the UI shows it
        assert value(latest[s], ROW_COUNT) == query(warehouse, f"SELECT count(*) FROM {s.core_table}")[0][0]


def test_core_figures_follow_what_changed(runs):
    (first, second, third), _, _, _ = runs
    for s in SHEETS:
        load, change, same = (r.materialized[core_key(s)] for r in (first, second, third))
        assert value(load, "rows_inserted") == value(load, "rows_in_core") > 0, s.name
        assert value(same, "rows_inserted") == value(same, "rows_updated") == value(same, "rows_deleted") == 0
        assert same["status"].value == "skipped_unchanged"
        expected_updates = 1 if s is MODELS else 0
        assert (value(change, "rows_updated"), value(change, "rows_inserted"), value(change, "rows_deleted")) == (
            expected_updates,
            0,
            0,
        ), s.name
        rejected = 1 if s is ROUTES else 0
        for metadata in (change, same):  # a skipped sheet reports its snapshot's rejects
            assert value(metadata, "rows_rejected") == rejected, s.name
            assert value(metadata, "reject_rate") == pytest.approx(rejected / value(metadata, "rows_excel"))
    raw = second.materialized[raw_key(ROUTES)]
    assert value(raw, "rows_rejected") == 1 and value(raw, "reject_rate") > 0


def test_gate_and_expectation_figures_are_numbers(runs):
    done, _, warehouse, _ = runs
    stored = dict(query(warehouse, "SELECT feature, match_rate FROM ops.feature_gates"))
    for run in done:
        gates = run.materialized[FEATURE_GATES]
        for gate in GATES:
            assert value(gates, f"match_rate_{gate.feature}") == pytest.approx(stored[gate.feature])
            check = next(m for k, m in run.checks.items() if k.name == gate_check_name(gate.feature))
            assert value(check, "match_rate") == pytest.approx(stored[gate.feature])
        for s in SHEETS:
            check = next(m for k, m in run.checks.items() if k.asset_key == core_key(s) and k.name == EXPECTATIONS)
            evaluated, met = value(check, "evaluated_expectations"), value(check, "expectations_met")
            assert evaluated > 0 and met == evaluated - value(check, "failed_expectations")
            assert value(check, "expectations_met_share") == pytest.approx(met / evaluated)
    # the third run carried every outcome over: the same figures as the run that evaluated them
    for key, metadata in done[2].checks.items():
        if key.name == EXPECTATIONS:
            assert value(metadata, "expectations_met") == value(done[1].checks[key], "expectations_met")
    # Evaluated by the first run's quality step, stored, and reported by its check step from the
    # store (no in-process channel); the third run only carried them over.
    evaluated = {
        run: {k: m["evaluated"].value for k, m in done[run].checks.items() if k.name == EXPECTATIONS} for run in (0, 2)
    }
    assert set(evaluated[0].values()) == {"now"} and len(evaluated[0]) == len(SHEETS)
    assert all(text.startswith("carried over from ") for text in evaluated[2].values())


def test_column_descriptions_are_the_data_dictionarys(runs):
    reports = runs[3]
    dictionary = (reports / "DATA_DICTIONARY.md").read_text()
    meanings = {}
    for line in dictionary.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("## "):
            table = line.split("`")[1]
        elif len(cells) == 9 and cells[0].startswith("`"):
            meanings[(table, cells[0].strip("`"))] = cells[8]
    for s in SHEETS:
        for column in schema_of(core_key(s)).columns:
            assert meanings[(s.core_table, column.name)] in column.description, (s.name, column.name)


def test_the_mismatch_report_goes_where_the_settings_resource_says(databases, tmp_path, monkeypatch):
    """The snapshot step writes CRITICAL_MISMATCHES.md to the reports folder SettingsResource
    gives, as the gates and the dictionary do (it read the environment's folder, ignoring a
    resource override)."""
    monkeypatch.setenv("PRODPLAN_HOME", str(tmp_path / "home"))
    book = tmp_path / "book.xlsx"
    write_sample(book, scale=0.005, seed=5)

    def lose_half_the_phases(workbook):
        phases = workbook["FasesOrdemFabrico"]
        phases.delete_rows(2, (phases.max_row - 1) // 2)

    half = edited(book, tmp_path / "half.xlsx", lose_half_the_phases)
    url = databases.warehouse("reports").url.render_as_string(hide_password=False)
    reports = tmp_path / "elsewhere"
    with DagsterInstance.ephemeral() as instance:
        for workbook in (book, half):
            resource = WarehouseResource(database_url=url)
            defs.resolve_job_def(INGEST_JOB).execute_in_process(
                instance=instance,
                run_config=QUIET,
                raise_on_error=False,
                resources={
                    "warehouse": resource,
                    "workbook_file": WorkbookResource(path=str(workbook)),
                    "ingestion_lock": IngestionLockResource(warehouse=resource),
                    "settings": SettingsResource(reports_dir=str(reports)),
                },
            )
    assert "--max-shrink" in (reports / "CRITICAL_MISMATCHES.md").read_text()
    assert not (tmp_path / "home" / "reports" / "CRITICAL_MISMATCHES.md").exists()
