"""DDL generated from the contract: the staging tables.

``sql/migrations/004_staging.sql`` is this module's output, committed so that the schema lives
in ``sql/`` like the rest; a test fails when the file and the contract drift apart.
Regenerate with ``python -m prodplan_pipeline.warehouse.ddl > sql/migrations/004_staging.sql``
(only while 004 has not shipped; afterwards a contract change needs a new migration).
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
    lines = [f"    {EXCEL_ROW.ljust(width)}  integer NOT NULL",
             f"    {REJECTED.ljust(width)}  boolean NOT NULL",
             f"    {KEY_REPEATED.ljust(width)}  boolean NOT NULL",
             f"    {DUPLICATE_OF.ljust(width)}  integer"]
    lines += [f"    {c.name.ljust(width)}  {c.type.sql_type}" for c in sheet.columns]
    body = ",\n".join(lines)
    return f"-- sheet {sheet.name}\nCREATE UNLOGGED TABLE {sheet.staging_table} (\n{body}\n);\n"


def render_staging_ddl() -> str:
    return _HEADER + "".join("\n" + staging_table_ddl(s) for s in SHEETS)


if __name__ == "__main__":
    print(render_staging_ddl(), end="")
