"""Dagster's standard table metadata, generated from the contract in one place.

Definition metadata (on the asset specs): ``dagster/table_name`` ("schema.table") and
``dagster/column_schema`` (types, nullability, keys and the data dictionary's meaning of each
column). Materialization metadata: ``dagster/row_count``, always the table's size when the step
ends (counted in SQL, or the exact count the step already holds), plus plain numbers for plots.
"""

from __future__ import annotations

from dagster import MetadataValue, TableColumn, TableColumnConstraints, TableConstraints, TableSchema

from prodplan_pipeline.contract import (
    DUPLICATE_OF,
    EXCEL_ROW,
    KEY_REPEATED,
    REJECTED,
    SHEETS_BY_NAME,
    Sheet,
)

TABLE_NAME, COLUMN_SCHEMA, ROW_COUNT = "dagster/table_name", "dagster/column_schema", "dagster/row_count"

# The bookkeeping columns every staging table carries before the contract's (see ddl.py).
STAGING_COLUMNS = (
    (EXCEL_ROW, "integer", False, "the row's Excel row number (the header is row 1)"),
    (REJECTED, "boolean", False, "the row failed typing: its raw text is in quarantine.rejects"),
    (KEY_REPEATED, "boolean", False, "the reader saw the row's key more than once"),
    (DUPLICATE_OF, "integer", True, "set by the merge: the Excel row of the kept row sharing this key"),
)


def table_definition(table: str, schema: TableSchema | None = None) -> dict:
    """Definition metadata of a table asset: its qualified name and, when known, its columns."""
    metadata = {TABLE_NAME: table}
    if schema is not None:
        metadata[COLUMN_SCHEMA] = MetadataValue.table_schema(schema)
    return metadata


def dictionary_meaning(sheet: Sheet, name: str) -> str:
    """A core column's meaning exactly as DATA_DICTIONARY.md writes it."""
    column = next((c for c in sheet.columns if c.name == name), None)
    if column is None:
        return next((d.description for d in sheet.derived if d.name == name), "surrogate key")
    meaning = column.description
    if column.references:
        meaning = f"{meaning} → {column.references}".strip(" →")
    if column.domain:
        meaning += f" (values {', '.join(map(str, column.domain))})"
    return meaning


def column_description(sheet: Sheet, name: str) -> str:
    """The dictionary's meaning and where the value comes from (the UI shows only this)."""
    column = next((c for c in sheet.columns if c.name == name), None)
    origin = f"Excel {sheet.name}.{column.header}" if column else "computed by the pipeline"
    meaning = dictionary_meaning(sheet, name)
    return f"{meaning} ({origin})" if meaning else origin


def _constraints(sheet: Sheet, name: str, nullable: bool) -> TableColumnConstraints:
    keys, other = sheet.key_names, []
    if name in keys and len(keys) > 1:
        other.append(f"part of the key ({', '.join(keys)})")
    column = next((c for c in sheet.columns if c.name == name), None)
    if column and column.references:
        parent, header = column.references.split(".")
        target = SHEETS_BY_NAME[parent]
        # orphans are kept and flagged in ops.data_quality_issues, so no foreign key
        other.append(f"references {target.core_table}.{target.column(header).name} (not enforced)")
    if column and column.domain:
        other.append(f"expected in {{{', '.join(map(str, column.domain))}}} (checked, not enforced)")
    return TableColumnConstraints(nullable=nullable, unique=keys == (name,), other=other)


def _key_constraint(sheet: Sheet) -> TableConstraints:
    nullable = {name for name, _, required in sheet.core_columns if not required}
    key = f"unique key ({', '.join(sheet.key_names)})"
    if nullable & set(sheet.key_names):
        key += ", NULLs compare equal"
    if sheet.key is None:
        key += ": no source key, a fingerprint of the row's values and its occurrence"
    return TableConstraints(other=[key])


def core_schema(sheet: Sheet) -> TableSchema:
    return TableSchema(
        columns=[
            TableColumn(
                name, sql_type, column_description(sheet, name), _constraints(sheet, name, nullable=not required)
            )
            for name, sql_type, required in sheet.core_columns
        ],
        constraints=_key_constraint(sheet),
    )


def derived_schema(sheet: Sheet) -> TableSchema:
    """Only the columns the pipeline computes: the rest of the table is the core asset's."""
    return TableSchema(
        columns=[
            TableColumn(
                d.name, d.sql_type, column_description(sheet, d.name), TableColumnConstraints(nullable=not d.required)
            )
            for d in sheet.derived
        ]
    )


def staging_schema(sheet: Sheet) -> TableSchema:
    # Typed as in core, but every contract column may be NULL here (a cell that failed typing).
    columns = [
        TableColumn(name, sql_type, description, TableColumnConstraints(nullable=nullable))
        for name, sql_type, nullable, description in STAGING_COLUMNS
    ]
    columns += [TableColumn(c.name, c.type.sql_type, column_description(sheet, c.name)) for c in sheet.columns]
    return TableSchema(columns=columns)


def count_rows(conn, table: str) -> int:
    """The table's size, in the caller's transaction (table names come from the code only)."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        return cur.fetchone()[0]


def share(part: int, whole: int) -> float:
    """part / whole as a plottable float (0.0 of nothing)."""
    return part / whole if whole else 0.0
