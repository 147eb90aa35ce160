"""Data expectations: suites generated from the contract, run by Great Expectations inside
PostgreSQL; every table passes on clean data, and rows damaged on purpose fail exactly the
expectations they break, with exactly their count."""

from __future__ import annotations

import subprocess
import sys

import psycopg2
import pytest

from prodplan_pipeline.contract import SHEETS, sheet
from prodplan_pipeline.ingest.pipeline import ingest_workbook
from prodplan_pipeline.quality import expectations
from prodplan_pipeline.quality.expectations import (
    EXTRA_EXPECTATIONS,
    ExpectationReport,
    ExpectationSpec,
    _connection_string,
    _table_batch,
    dispose_datasources,
    expectation_specs,
    run_expectations,
)
from prodplan_pipeline.warehouse import Warehouse
from prodplan_pipeline.warehouse.connection import libpq_dsn
from prodplan_pipeline.workbook.sample import write_sample
from prodplan_pipeline_tests.conftest import REPO_ROOT
from prodplan_pipeline_tests.warehouse_queries import query

FASES = sheet("FasesOrdemFabrico")
# Phase rows whose end is moved before their start: 4% of the rows with both, enough to take the
# share below the 98% the suite accepts.
INVERTED_SHARE = 0.04


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("gx") / "sample.xlsx"
    write_sample(path, scale=0.01, seed=5)
    return path


def ingested(databases, sample, purpose: str) -> Warehouse:
    """A fresh database of our own (bad rows never touch the session's shared warehouse)."""
    warehouse = Warehouse(databases.create(purpose))
    warehouse.migrate()
    assert ingest_workbook(warehouse, sample).passed
    return warehouse


@pytest.fixture(scope="module")
def clean(databases, sample):
    warehouse = ingested(databases, sample, "gx")
    yield warehouse
    dispose_datasources()


# --- The suites, without a database ------------------------------------------------------------


def kinds_by_column(table_sheet) -> dict[tuple[str, ...], set[str]]:
    found: dict[tuple[str, ...], set[str]] = {}
    for spec in expectation_specs(table_sheet):
        found.setdefault(spec.columns, set()).add(spec.kind)
    return found


def test_suites_follow_the_contract():
    errors = kinds_by_column(sheet("OrdemFabricoErros"))
    assert "ExpectCompoundColumnsToBeUnique" in errors[("row_fingerprint", "occurrence")]
    assert "ExpectColumnValuesToNotBeNull" in errors[("row_fingerprint",)]
    assert errors[("ofch_gravidade",)] == {"ExpectColumnValuesToNotBeNull", "ExpectColumnValuesToBeInSet"}

    skills = kinds_by_column(sheet("FuncionariosFasesAptos"))
    assert ("funcionario_fase_inicio",) not in skills  # part of the key, legitimately NULL
    assert (
        "ExpectCompoundColumnsToBeUnique"
        in skills[("funcionario_fase_funcionario_id", "funcionario_fase_fase_id", "funcionario_fase_inicio")]
    )

    phases = {s.description: s for s in expectation_specs(FASES)}
    assert phases["fase_of_id is unique"].kind == "ExpectColumnValuesToBeUnique"
    assert phases["fase_of_turno in {1,2,3}"].kwargs["value_set"] == [1, 2, 3]
    assert "fase_of_turno is not null" not in phases  # an optional column
    assert phases["fase_of_retorno in {0,1}"].kwargs["value_set"] == [0, 1]


def test_extra_expectations_name_contract_tables_and_columns():
    columns = {s.core_table: {name for name, _, _ in s.core_columns} for s in SHEETS}
    for spec in EXTRA_EXPECTATIONS:
        assert set(spec.columns) <= columns[spec.table], spec


def test_connection_string_escapes_what_gx_would_substitute():
    # GX reads "$x" / "${X}" in a connection string as a config variable.
    assert _connection_string("postgresql://u:p$x@h/db") == "postgresql+psycopg2://u:p%24x@h/db"
    assert _connection_string("postgresql://u@/db?host=/tmp/a$b") == ("postgresql+psycopg2://u@/db?host=%2Ftmp%2Fa%24b")


def test_importing_the_module_does_not_import_great_expectations():
    code = "import sys, prodplan_pipeline.quality.expectations; sys.exit('great_expectations' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT).returncode == 0


# --- Clean data ---------------------------------------------------------------------------------


def test_gx_computes_in_postgresql(clean):
    batch = _table_batch(_connection_string(clean.url), FASES.core_table)
    assert type(batch.data.execution_engine).__name__ == "SqlAlchemyExecutionEngine"


@pytest.mark.parametrize("table_sheet", SHEETS, ids=lambda s: s.name)
def test_clean_data_meets_every_expectation(clean, table_sheet, capfd):
    report = run_expectations(clean.url, table_sheet)
    assert report.success, report.summary()
    n = len(expectation_specs(table_sheet))
    assert report.summary() == f"{table_sheet.core_table}: {n} of {n} expectations met"
    rows = query(clean, f"SELECT count(*) FROM {table_sheet.core_table}")[0][0]
    assert report.results[0].observed_value == rows  # the row count comes first
    assert report.as_metadata()["failed_expectations"] == 0
    assert "Calculating Metrics" not in "".join(capfd.readouterr())  # no progress bars


def test_a_unix_socket_url_works(clean):
    socket_dir = query(clean, "SHOW unix_socket_directories")[0][0].split(",")[0].strip()
    socket_url = clean.url.set(host=None, query={"host": socket_dir})
    psycopg2.connect(libpq_dsn(socket_url)).close()  # the tests' servers are local: their socket works
    report = run_expectations(socket_url.render_as_string(hide_password=False), sheet("Modelos"))
    assert report.success


def test_the_real_sample_meets_every_expectation(databases, real_sample):
    """The thresholds hold on the real export (its large boats have coefficients up to 160)."""
    warehouse = ingested(databases, real_sample.path, "gxreal")
    reports = [run_expectations(warehouse.url, s) for s in SHEETS]
    assert [r.summary() for r in reports if not r.success] == []


def test_an_expectation_gx_cannot_evaluate_fails_with_the_reason(clean, monkeypatch):
    unknown = ExpectationSpec(
        "core.modelos", "ExpectColumnValuesToNotBeNull", {"column": "produto_cor"}, "produto_cor is not null"
    )
    monkeypatch.setattr(expectations, "EXTRA_EXPECTATIONS", (unknown,))
    report = run_expectations(clean.url, sheet("Modelos"))
    assert [r.description for r in report.failed] == ["produto_cor is not null"]
    assert "produto_cor" in report.failed[0].error and "error:" in report.summary()


# --- Damaged data -------------------------------------------------------------------------------


def damage_phases(warehouse: Warehouse) -> int:
    """Break fases_ordem_fabrico in four ways on disjoint rows; returns how many were inverted."""
    with_both = query(warehouse, "SELECT count(*) FROM core.fases_ordem_fabrico WHERE fase_of_fim IS NOT NULL")[0][0]
    inverted = int(with_both * INVERTED_SHARE)
    # Rows that meet every expectation, numbered; each kind of damage takes its own range.
    ranked = (
        "SELECT fase_of_id FROM (SELECT fase_of_id, row_number() OVER (ORDER BY fase_of_id) n "
        "FROM core.fases_ordem_fabrico WHERE fase_of_fim >= fase_of_inicio) r "
        "WHERE n BETWEEN {} AND {}"
    )
    update = "UPDATE core.fases_ordem_fabrico SET {} WHERE fase_of_id IN (" + ranked + ")"
    query(warehouse, update.format("fase_of_turno = 9", 1, 2))
    query(warehouse, update.format("fase_of_peso = 900", 3, 6))
    # event_time is coalesce(fim, inicio), so moving inicio keeps each row in its partition.
    query(warehouse, update.format("fase_of_inicio = fase_of_fim + interval '1 hour'", 7, 6 + inverted))
    # The primary key is (fase_of_id, event_time): the same id a day later is a second row.
    copy = ", ".join(
        "event_time + interval '1 day'" if name == "event_time" else name for name, _, _ in FASES.core_columns
    )
    query(
        warehouse,
        f"INSERT INTO core.fases_ordem_fabrico SELECT {copy} FROM core.fases_ordem_fabrico "
        f"WHERE fase_of_id IN ({ranked.format(7 + inverted, 7 + inverted)})",
    )
    return inverted


@pytest.fixture(scope="module")
def damaged(databases, sample, clean):
    warehouse = ingested(databases, sample, "gxbad")
    inverted_before = query(
        warehouse, "SELECT count(*) FROM core.fases_ordem_fabrico WHERE fase_of_fim < fase_of_inicio"
    )[0][0]
    inverted = damage_phases(warehouse)
    query(
        warehouse,
        "UPDATE core.erros_ordem_fabrico SET ofch_gravidade = 7 "
        "WHERE (row_fingerprint, occurrence) IN (SELECT row_fingerprint, occurrence "
        "FROM core.erros_ordem_fabrico ORDER BY 1, 2 LIMIT 3)",
    )
    query(
        warehouse,
        "UPDATE core.modelos SET produto_qtd_gel_deck = 75 "
        "WHERE produto_id = (SELECT min(produto_id) FROM core.modelos)",
    )
    yield warehouse, inverted_before + inverted


def failures(report: ExpectationReport) -> dict[str, int]:
    return {r.description: r.unexpected_count for r in report.failed}


def test_damaged_rows_fail_exactly_the_expectations_they_break(damaged):
    warehouse, inverted = damaged
    pair = "fase_of_fim >= fase_of_inicio in at least 98% of rows with both"
    expected = {
        "core.fases_ordem_fabrico": {
            "fase_of_turno in {1,2,3}": 2,
            "fase_of_peso between 0 and 500 kg": 4,
            pair: inverted,
            "fase_of_id is unique": 2,
        },
        "core.erros_ordem_fabrico": {"ofch_gravidade in {1,2,3}": 3},
        "core.modelos": {"produto_qtd_gel_deck between 0 and 50 kg": 1},
    }
    for table_sheet in SHEETS:
        report = run_expectations(warehouse.url, table_sheet)
        assert failures(report) == expected.get(table_sheet.core_table, {}), report.summary()
        assert report.success == (table_sheet.core_table not in expected)


def test_a_failed_report_explains_itself(damaged):
    warehouse = damaged[0]
    rows = query(warehouse, "SELECT count(*) FROM core.erros_ordem_fabrico")[0][0]
    report = run_expectations(warehouse.url, sheet("OrdemFabricoErros"))
    assert report.summary() == (
        "core.erros_ordem_fabrico: 9 of 10 expectations met; ofch_gravidade "
        f"in {{1,2,3}}: 3 unexpected ({300 / rows:.2f}%), e.g. 7, 7, 7"
    )
    metadata = report.as_metadata()
    assert (metadata["failed_expectations"], metadata["unexpected_total"]) == (1, 3)
    failed_row = next(line for line in metadata["expectations"].splitlines() if "❌" in line)
    assert "ofch_gravidade in {1,2,3}" in failed_row and "| 3 |" in failed_row


def test_the_phase_share_is_reported_as_a_share(damaged):
    warehouse, inverted = damaged
    with_both = query(warehouse, "SELECT count(*) FROM core.fases_ordem_fabrico WHERE fase_of_fim IS NOT NULL")[0][0]
    report = run_expectations(warehouse.url, FASES)
    pair = next(r for r in report.results if r.expectation_type == "ExpectColumnPairValuesAToBeGreaterThanB")
    assert pair.unexpected_percent == pytest.approx(100 * inverted / with_both)
    assert pair.examples and all(len(example) == 2 for example in pair.examples)
