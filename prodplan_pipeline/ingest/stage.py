"""Land a typed sheet in its staging table (COPY), and its cell-level rejects in quarantine."""

from __future__ import annotations

import io
import json
from collections import defaultdict
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg2.extras import execute_values

from prodplan_pipeline.contract import DUPLICATE_OF, EXCEL_ROW, KEY_REPEATED, REJECTED
from prodplan_pipeline.workbook.reader import BLANK_ROW, CellProblem, SheetRead

INSERT_REJECTS = """
    INSERT INTO quarantine.rejects
        (run_id, sheet, excel_row, reason_code, column_name, raw_value, detail, raw_row)
    VALUES %s"""


def stage_sheet(conn, read: SheetRead, run_id: int) -> int:
    """Replace the sheet's staging rows with this read; return how many rows were rejected."""
    problems = rejected_rows(read)
    rejected = pc.is_in(read.table.column(EXCEL_ROW), pa.array(list(problems), pa.int32()))
    table = (
        read.table.append_column(REJECTED, rejected)
        .append_column(KEY_REPEATED, key_repeated(read, rejected))
        .append_column(DUPLICATE_OF, pa.nulls(read.table.num_rows, pa.int32()))
    )
    columns = [EXCEL_ROW, REJECTED, KEY_REPEATED, DUPLICATE_OF, *read.sheet.column_names]
    with conn.cursor() as cur:
        cur.execute(f"TRUNCATE {read.sheet.staging_table}")
        cur.copy_expert(
            f"COPY {read.sheet.staging_table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)",
            _csv(table.select(columns)),
        )
        # Fresh statistics: without them the merge's joins are planned for an empty table.
        cur.execute(f"ANALYZE {read.sheet.staging_table}")
        cur.execute("DELETE FROM quarantine.rejects WHERE run_id = %s AND sheet = %s", (run_id, read.sheet.name))
        execute_values(cur, INSERT_REJECTS, _reject_rows(read, problems, run_id), page_size=1000)
    return len(problems)


def key_repeated(read: SheetRead, rejected) -> pa.Array:
    """True for valid rows whose key occurs more than once among valid rows. Found here in
    ~0.1 s, so the merge's duplicate analysis only looks at those few rows."""
    rows = read.table.num_rows
    if read.sheet.key is None or rows == 0:
        return pa.array([False] * rows, pa.bool_())
    if len(read.sheet.key_names) == 1:  # counted as typed: a cast to text took 3x as long
        key = read.table.column(read.sheet.key_names[0])
    else:
        parts = [pc.fill_null(pc.cast(read.table.column(n), pa.string()), "\u2205") for n in read.sheet.key_names]
        key = pc.binary_join_element_wise(*parts, "|")
    valid_keys = key.filter(pc.invert(rejected))
    counts = pc.value_counts(valid_keys)
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    # skip_nulls=False: a repeated empty key is repeated too (value_counts counts the nulls)
    return pc.and_(pc.is_in(key, value_set=repeated, skip_nulls=False), pc.invert(rejected))


def _csv(table: pa.Table) -> io.BytesIO:
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    buffer.seek(0)
    return buffer


def rejected_rows(read: SheetRead) -> dict[int, list[CellProblem]]:
    """Excel row -> its problems, in column order; a blank row is one problem of its own."""
    by_row: dict[int, list[CellProblem]] = defaultdict(list)
    for row in read.blank_rows:
        by_row[row] = [CellProblem(row, "", BLANK_ROW, None)]
    order = {h: i for i, h in enumerate(read.sheet.headers)}
    for problem in sorted(read.problems, key=lambda p: (p.excel_row, order[p.column])):
        if problem.excel_row not in read.blank_rows:
            by_row[problem.excel_row].append(problem)
    return dict(by_row)


def _reject_rows(read: SheetRead, problems: dict[int, list[CellProblem]], run_id: int) -> list[tuple]:
    if not problems:
        return []
    rows = read.table.filter(pc.is_in(read.table.column(EXCEL_ROW), pa.array(list(problems), pa.int32())))
    raw_by_row = {}
    for values in rows.to_pylist():
        excel_row = values.pop(EXCEL_ROW)
        raw_by_row[excel_row] = {c.header: _as_text(values[c.name]) for c in read.sheet.columns}
    out = []
    for excel_row, cell_problems in sorted(problems.items()):
        raw = raw_by_row[excel_row]
        for p in cell_problems:
            if p.column:
                raw[p.column] = p.raw_value
        first = cell_problems[0]
        detail = _detail(first, cell_problems[1:])
        out.append(
            (
                run_id,
                read.sheet.name,
                excel_row,
                first.reason,
                first.column or None,
                first.raw_value,
                detail,
                json.dumps(raw, ensure_ascii=False),
            )
        )
    return out


def _detail(first: CellProblem, others: list[CellProblem]) -> str:
    what = {
        "blank_row": "the row is empty between data rows",
        "required_null": f"'{first.column}' is required but empty (NULL)",
        "bad_type": f"'{first.column}' holds {first.raw_value!r}, which is not a valid value of its type",
    }[first.reason]
    if others:
        what += "; also " + ", ".join(f"{p.column} ({p.reason})" for p in others)
    return what


def _as_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
