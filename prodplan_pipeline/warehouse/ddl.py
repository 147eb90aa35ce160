"""DDL generated from the contract: the staging tables.

``sql/migrations/004_staging.sql`` was this module's output for the first nine sheets. Applied
migrations are never edited, so a new sheet's staging table goes into a new migration:
``python -m prodplan_pipeline.warehouse.ddl NewSheet >> sql/migrations/NNN_new_sheet.sql``.
``test_contract_schema.py`` compares the migrated database with the contract, whichever file
created each table.
"""

from __future__ import annotations

from prodplan_pipeline.contract import DUPLICATE_OF, EXCEL_ROW, KEY_REPEATED, REJECTED, SHEETS, Sheet

_HEADER = """\
-- GENERATED from prodplan_pipeline/contract.py by prodplan_pipeline.warehouse.ddl: do not edit.
-- Landing tables: every data row of a sheet with its Excel row number, typed as in core by the
-- reader (cells that failed typing are NULL here and the row is marked rejected; its raw text is
-- in quarantine.rejects). key_repeated: the reader saw the row's key more than once; the merge
-- then sets duplicate_of to the kept row's Excel row for the other rows sharing that key.
-- UNLOGGED: rebuilt from the workbook on every run (no WAL, faster COPY).
"""


def staging_table_ddl(sheet: Sheet) -> str:
    width = max(len(EXCEL_ROW), *(len(name) for name in sheet.column_names))
    lines = [
        f"    {EXCEL_ROW.ljust(width)}  integer NOT NULL",
        f"    {REJECTED.ljust(width)}  boolean NOT NULL",
        f"    {KEY_REPEATED.ljust(width)}  boolean NOT NULL",
        f"    {DUPLICATE_OF.ljust(width)}  integer",
    ]
    lines += [f"    {c.name.ljust(width)}  {c.type.sql_type}" for c in sheet.columns]
    body = ",\n".join(lines)
    return f"-- sheet {sheet.name}\nCREATE UNLOGGED TABLE {sheet.staging_table} (\n{body}\n);\n"


def render_staging_ddl(names: list[str] | None = None) -> str:
    """The staging tables of the named sheets (every sheet by default)."""
    chosen = [s for s in SHEETS if not names or s.name in names]
    unknown = set(names or ()) - {s.name for s in chosen}
    if unknown:
        raise SystemExit(f"not sheets of the contract: {', '.join(sorted(unknown))}")
    return _HEADER + "".join("\n" + staging_table_ddl(s) for s in chosen)


if __name__ == "__main__":
    import sys

    print(render_staging_ddl(sys.argv[1:]), end="")
