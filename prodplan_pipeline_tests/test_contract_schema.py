"""The migrated database and the sheet contract agree, column by column: migrations are immutable
once applied, so a new sheet is a contract entry plus a new migration, and this is what checks it."""

from __future__ import annotations

import pytest

from prodplan_pipeline.contract import (
    DUPLICATE_OF,
    EXCEL_ROW,
    KEY_REPEATED,
    REJECTED,
    SHEETS,
    Sheet,
    snake_case,
)

COLUMNS = """
    SELECT column_name, data_type, is_nullable = 'NO'
    FROM information_schema.columns
    WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position"""

# The primary key, or for a key with a nullable column the UNIQUE NULLS NOT DISTINCT constraint.
KEY_COLUMNS = """
    SELECT array_agg(a.attname ORDER BY k.ord)
    FROM pg_constraint c
    CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
    WHERE c.conrelid = %s::regclass AND c.contype IN ('p', 'u')
    GROUP BY c.oid ORDER BY c.contype"""


def fetch(warehouse, statement, params):
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall()


@pytest.mark.parametrize("sheet", SHEETS, ids=lambda s: s.name)
def test_core_table_matches_the_contract(warehouse, sheet: Sheet):
    actual = fetch(warehouse, COLUMNS, ("core", sheet.table))
    assert actual == [tuple(c) for c in sheet.core_columns]


@pytest.mark.parametrize("sheet", SHEETS, ids=lambda s: s.name)
def test_core_key_matches_the_contract(warehouse, sheet: Sheet):
    keys = [tuple(row[0]) for row in fetch(warehouse, KEY_COLUMNS, (sheet.core_table,))]
    expected = sheet.key_names
    if sheet.partition_key:  # partitioned: the primary key must include the partition key
        expected = (*expected, sheet.partition_key)
    assert keys == [expected]


@pytest.mark.parametrize("sheet", SHEETS, ids=lambda s: s.name)
def test_staging_table_is_the_contracts_columns_typed(warehouse, sheet: Sheet):
    schema, table = sheet.staging_table.split(".")
    actual = fetch(warehouse, COLUMNS, (schema, table))
    assert actual == [
        (EXCEL_ROW, "integer", True),
        (REJECTED, "boolean", True),
        (KEY_REPEATED, "boolean", True),
        (DUPLICATE_OF, "integer", False),
    ] + [(c.name, c.type.sql_type, False) for c in sheet.columns]
    persistence = fetch(
        warehouse, "SELECT relpersistence FROM pg_class WHERE oid = %s::regclass", (sheet.staging_table,)
    )
    assert persistence == [("u",)], "staging tables are UNLOGGED"


def test_fases_is_partitioned_by_month_with_a_default_partition(warehouse):
    rows = fetch(
        warehouse,
        """
        SELECT p.partstrat, pg_get_partkeydef(p.partrelid),
               (SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = p.partrelid AND c.relname = 'fases_ordem_fabrico_default')
        FROM pg_partitioned_table p WHERE p.partrelid = 'core.fases_ordem_fabrico'::regclass""",
        (),
    )
    assert rows == [("r", "RANGE (event_time)", 1)]


@pytest.mark.parametrize(
    "header, name",
    [
        ("Of_DataCriacao", "of_data_criacao"),
        ("OFCH_GRAVIDADE", "ofch_gravidade"),
        ("FuncionarioFaseOf_FaseOfId", "funcionario_fase_of_fase_of_id"),
        ("ProdutoFase_CoeficienteX", "produto_fase_coeficiente_x"),
        ("Produto_QtdGelDeck", "produto_qtd_gel_deck"),
    ],
)
def test_snake_case_names(header, name):
    assert snake_case(header) == name


def test_contract_names_are_unique_and_keys_exist():
    assert len({s.name for s in SHEETS}) == len({s.table for s in SHEETS}) == 9
    for sheet in SHEETS:
        assert len(set(sheet.column_names)) == len(sheet.columns)
        for header in sheet.key or ():
            sheet.column(header)


def test_the_merge_order_comes_from_the_contract_and_has_no_cycle():
    """Sheet.merges_after (which sheets the snapshot's transaction merges first) is derived from
    the derived values' joins and from moves_dependent_days: a defect waits for the phases and
    the orders it reads, a phase for the orders that record its days; no sheet waits on itself,
    directly or not (the commit would never find it ready)."""
    from graphlib import TopologicalSorter

    from prodplan_pipeline.contract import sheet

    waits = {s.name: set(s.merges_after) for s in SHEETS}
    assert set().union(*waits.values()) <= set(waits) and all(name not in w for name, w in waits.items())
    list(TopologicalSorter(waits).static_order())  # raises CycleError on a cycle
    assert waits["OrdemFabricoErros"] == {"OrdensFabrico", "FasesOrdemFabrico"}
    assert waits["FasesOrdemFabrico"] == {"OrdensFabrico"} and sheet("OrdensFabrico").moves_dependent_days
    assert not waits["OrdensFabrico"] and not waits["Funcionarios"]
