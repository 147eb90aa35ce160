"""DATA_DICTIONARY.md: the contract (headers, types, keys, meaning) with live statistics.

Rows, NULL rates and min/max are exact (one pass per table); distinct counts come from
PostgreSQL's statistics after an ANALYZE (estimates, marked ≈): exact distinct counts over
every column of the 519k-row table would cost seconds on every run for a documentation page.
"""

from __future__ import annotations

from pathlib import Path

from prodplan_pipeline.contract import SHEETS, Sheet

REPORT_NAME = "DATA_DICTIONARY.md"
DISTINCT_ESTIMATES = """
    SELECT attname, CASE WHEN n_distinct >= 0 THEN n_distinct ELSE -n_distinct * %s END
    FROM pg_stats WHERE schemaname = %s AND tablename = %s"""


def table_statistics(conn, sheet: Sheet) -> dict:
    names = [name for name, _, _ in sheet.core_columns]
    # booleans have no min/max in PostgreSQL: compare them as 0/1
    values = {name: f"{name}::int" if sql_type == "boolean" else name for name, sql_type, _ in sheet.core_columns}
    parts = ["count(*)"] + [f"count({n}), min({values[n]})::text, max({values[n]})::text" for n in names]
    schema, table = sheet.core_table.split(".")
    with conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(parts)} FROM {sheet.core_table}")
        values = cur.fetchone()
        rows = values[0]
        cur.execute(DISTINCT_ESTIMATES, (rows, schema, table))
        distinct = {name: round(n) for name, n in cur.fetchall()}
        if not distinct:  # never analyzed (the merge analyzes a table it changed much, ~1.5 s for
            cur.execute(f"ANALYZE {sheet.core_table}")  # the phases: not twice)
            cur.execute(DISTINCT_ESTIMATES, (rows, schema, table))
            distinct = {name: round(n) for name, n in cur.fetchall()}
    columns = {}
    for i, name in enumerate(names):
        non_null, low, high = values[1 + 3 * i : 4 + 3 * i]
        columns[name] = {
            "null_rate": (rows - non_null) / rows if rows else None,
            "distinct": distinct.get(name),
            "min": low,
            "max": high,
        }
    return {"rows": rows, "columns": columns}


def write_dictionary(conn, reports: Path) -> Path:
    lines = [
        "# Data dictionary",
        "",
        "Generated after each ingestion from the sheet contract (`prodplan_pipeline/contract.py`) "
        "and the live core tables. Distinct counts marked ≈ are PostgreSQL estimates.",
        "",
    ]
    for sheet in SHEETS:
        lines += _sheet_section(sheet, table_statistics(conn, sheet))
    reports.mkdir(parents=True, exist_ok=True)
    path = reports / REPORT_NAME
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _sheet_section(sheet: Sheet, stats: dict) -> list[str]:
    key = ", ".join(sheet.key) if sheet.key else "row fingerprint + occurrence (no source key)"
    headers = {c.name: c for c in sheet.columns}
    lines = [
        f"## {sheet.name} → `{sheet.core_table}`",
        "",
        f"{sheet.description} Key: {key}. Rows: {stats['rows']:,}.",
        "",
        "| column | Excel header | type | required | null rate | ≈ distinct | min | max | meaning |",
        "|---|---|---|---|---:|---:|---|---|---|",
    ]
    derived = {d.name: d.description for d in sheet.derived}
    for name, sql_type, required in sheet.core_columns:
        column, s = headers.get(name), stats["columns"][name]
        meaning = column.description if column else derived.get(name, "surrogate key")
        if column and column.references:
            meaning = f"{meaning} → {column.references}".strip(" →")
        if column and column.domain:
            meaning += f" (values {', '.join(map(str, column.domain))})"
        rate = "-" if s["null_rate"] is None else f"{s['null_rate']:.1%}"
        lines.append(
            f"| `{name}` | {column.header if column else '(derived)'} | {sql_type} | "
            f"{'yes' if required else 'no'} | {rate} | {s['distinct'] if s['distinct'] is not None else '-'} | "
            f"{s['min'] or '-'} | {s['max'] or '-'} | {meaning} |"
        )
    return lines + [""]
