"""SQL statements generated from the contract, one set per sheet.

Identifiers come only from ``contract.py`` (checked to be plain snake_case here); values are
always bound parameters. Each function returns the statement for one sheet.
"""

from __future__ import annotations

import re
from functools import cache

from prodplan_pipeline.contract import SURROGATE_KEY, Sheet

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")

# Which day each changed row moves, for the changed-days sensor: (kind, day of row alias r).
# A defect's day is its inspection phase row's event time, else its order's dates
# (the same rule as the derived ofch_event_time).
DAY_SOURCES = {
    "fases_ordem_fabrico": ("phase_event", "event_time", "SELECT r.event_time::date AS d FROM r"),
    "ordens_fabrico": ("order_finish", "of_data_acabamento",
                       "SELECT r.of_data_acabamento::date AS d FROM r"),
    # A defect's day needs joins (its inspection phase row, else its order): the changed rows go
    # to a temporary table first, analysed, so the planner picks a hash join for a big change.
    "erros_ordem_fabrico": ("defect", None, None),
}


def defers_days(sheet: Sheet) -> bool:
    """True for the sheet whose changed days are computed after its merge (defects)."""
    kind, _, day = DAY_SOURCES.get(sheet.table, (None, None, None))
    return kind is not None and day is None


DEFECT_CHANGES = """CREATE TEMP TABLE defect_changes (erro_fase_of_avaliacao integer, erro_of_id integer)
    ON COMMIT DROP"""
RECORD_DEFECT_DAYS = """
    INSERT INTO ops.changed_days (run_id, kind, day)
    SELECT DISTINCT %(run_id)s, 'defect', coalesce(f.event_time, o.of_data_acabamento, o.of_data_criacao)::date
    FROM defect_changes r
    LEFT JOIN core.fases_ordem_fabrico f ON f.fase_of_id = r.erro_fase_of_avaliacao
    LEFT JOIN core.ordens_fabrico o ON o.of_id = r.erro_of_id
    WHERE coalesce(f.event_time, o.of_data_acabamento, o.of_data_criacao) IS NOT NULL
    ON CONFLICT DO NOTHING"""
# Columns the merge computes itself (the partition key must be right when a row is written).
MERGE_COMPUTED = {"fases_ordem_fabrico": {"event_time": "coalesce(fase_of_fim, fase_of_inicio)"}}
# Derived columns the merge clears on a changed row: NULL marks the row for the incremental
# backfill (inserted rows start NULL anyway).
MERGE_RESETS = {"fases_ordem_fabrico": ("duration_seconds", "is_open", "is_done")}


def ident(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a contract identifier: {name!r}")
    return name


def cols(names, alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + ident(n) for n in names)


def key_match(sheet: Sheet, left: str, right: str) -> str:
    """Join condition on the sheet's key; NULL-safe where a key column may be NULL."""
    nullable = {c.name for c in sheet.columns if not c.required}
    parts = []
    for name in sheet.key_names:
        op = "IS NOT DISTINCT FROM" if name in nullable else "="
        parts.append(f"{left}.{ident(name)} {op} {right}.{ident(name)}")
    return " AND ".join(parts)


def fingerprint_sql(sheet: Sheet, alias: str) -> str:
    return f"md5(ROW({cols(sheet.column_names, alias)})::text)"


@cache
def snapshot(sheet: Sheet) -> str:
    """The sheet's valid rows as a temporary table, with the merge-computed columns."""
    extra = [f"{expr} AS {ident(name)}" for name, expr in MERGE_COMPUTED.get(sheet.table, {}).items()]
    if sheet.key is None:
        fp = fingerprint_sql(sheet, "s")
        extra += [f"{fp} AS {SURROGATE_KEY[0]}",
                  f"row_number() OVER (PARTITION BY {fp} ORDER BY s.excel_row)::int AS {SURROGATE_KEY[1]}"]
    select = ", ".join(["s.excel_row", cols(sheet.column_names, "s"), *extra])
    return (f"CREATE TEMP TABLE snap ON COMMIT DROP AS SELECT {select} "
            f"FROM {sheet.staging_table} s WHERE NOT s.rejected")


@cache
def key_duplicates(sheet: Sheet) -> str:
    """Rows sharing a key with an earlier row: exact copies, or different rows (rejects)."""
    key = cols(sheet.key_names)
    return f"""
        CREATE TEMP TABLE dup ON COMMIT DROP AS
        WITH keys AS (SELECT {key} FROM snap GROUP BY {key} HAVING count(*) > 1)
        SELECT s.excel_row,
               min(s.excel_row) OVER (PARTITION BY {cols(sheet.key_names, 's')}) AS kept_row,
               min(s.excel_row) OVER (PARTITION BY {cols(sheet.column_names, 's')}) AS first_same
        FROM snap s JOIN keys k ON {key_match(sheet, 's', 'k')}"""


def raw_row_json(sheet: Sheet, alias: str) -> str:
    pairs = ", ".join(f"'{c.header}', {alias}.{ident(c.name)}::text" for c in sheet.columns)
    return f"jsonb_build_object({pairs})"


@cache
def reject_key_duplicates(sheet: Sheet) -> str:
    first_key = sheet.key[0] if sheet.key else ""
    return f"""
        INSERT INTO quarantine.rejects
            (run_id, sheet, excel_row, reason_code, column_name, raw_value, detail, raw_row)
        SELECT %(run_id)s, %(sheet)s, d.excel_row, 'duplicate_key', '{first_key}',
               s.{ident(sheet.key_names[0])}::text,
               'same key as Excel row ' || d.kept_row || ' (kept) but different values',
               {raw_row_json(sheet, 's')}
        FROM dup d JOIN {sheet.staging_table} s ON s.excel_row = d.excel_row
        WHERE d.excel_row <> d.kept_row AND d.first_same <> d.kept_row"""


@cache
def protected_keys(sheet: Sheet) -> str:
    """Keys seen in this snapshot only in rejected rows: their core rows must not be deleted."""
    key = cols(sheet.key_names)
    required = [c.name for c in sheet.columns if c.required and c.name in sheet.key_names]
    not_null = " AND ".join(f"{ident(n)} IS NOT NULL" for n in required) or "true"
    return f"""
        CREATE TEMP TABLE protected ON COMMIT DROP AS
        SELECT {key} FROM {sheet.staging_table} WHERE rejected AND {not_null}
        EXCEPT SELECT {key} FROM snap"""


def _gone(sheet: Sheet, protected: bool) -> str:
    """Core rows (alias c) whose key is neither in the snapshot nor protected."""
    gone = f"NOT EXISTS (SELECT 1 FROM snap s WHERE {key_match(sheet, 's', 'c')})"
    if protected:
        gone += f" AND NOT EXISTS (SELECT 1 FROM protected p WHERE {key_match(sheet, 'p', 'c')})"
    return gone


@cache
def shrink_figures(sheet: Sheet, protected: bool) -> str:
    return f"""SELECT (SELECT count(*) FROM {sheet.core_table}),
                      (SELECT count(*) FROM {sheet.core_table} c WHERE {_gone(sheet, protected)})"""


def _written_columns(sheet: Sheet) -> list[str]:
    surrogate = list(SURROGATE_KEY) if sheet.key is None else []
    return surrogate + list(sheet.column_names) + list(MERGE_COMPUTED.get(sheet.table, {}))


def _with_days(sheet: Sheet, dml: str) -> str:
    """Wrap a data-modifying statement (CTE ``changed_rows`` returning r.*): record the days it
    touched, return how many rows it changed."""
    kind, _, day = DAY_SOURCES.get(sheet.table, (None, None, None))
    if kind is None:
        return f"WITH r AS ({dml} RETURNING 1) SELECT count(*) FROM r"
    if day is None:  # defects: keep the references, the days are computed after the merge
        return (f"WITH r AS ({dml} RETURNING erro_fase_of_avaliacao, erro_of_id), "
                f"k AS (INSERT INTO defect_changes SELECT * FROM r) SELECT count(*) FROM r")
    return f"""
        WITH r AS ({dml} RETURNING *),
        days AS (
            INSERT INTO ops.changed_days (run_id, kind, day)
            SELECT DISTINCT %(run_id)s, '{kind}', d FROM ({day}) x
            WHERE d IS NOT NULL
            ON CONFLICT DO NOTHING)
        SELECT count(*) FROM r"""


@cache
def insert_new(sheet: Sheet) -> str:
    written = cols(_written_columns(sheet))
    dml = (f"INSERT INTO {sheet.core_table} ({written}) SELECT {written} FROM snap s "
           f"WHERE NOT EXISTS (SELECT 1 FROM {sheet.core_table} c WHERE {key_match(sheet, 'c', 's')})")
    return _with_days(sheet, dml)


@cache
def delete_gone(sheet: Sheet, protected: bool) -> str:
    return _with_days(sheet, f"DELETE FROM {sheet.core_table} c WHERE {_gone(sheet, protected)}")


@cache
def update_changed(sheet: Sheet) -> str:
    """Rewrite only rows whose source values differ (unchanged rows cost no write, no WAL).
    The days of both the old and the new version of a changed row are recorded."""
    source = [n for n in sheet.column_names if n not in sheet.key_names]
    if not source:  # every column is part of the key: a row can be new or gone, never changed
        return "SELECT 0"
    written = [n for n in _written_columns(sheet) if n not in sheet.key_names]
    kind, old_day_column, _ = DAY_SOURCES.get(sheet.table, (None, None, None))
    old_day = f", c.{ident(old_day_column)} AS old_day" if old_day_column else ""
    changed = (f"SELECT s.*{old_day} FROM snap s JOIN {sheet.core_table} c ON {key_match(sheet, 'c', 's')} "
               f"WHERE ({cols(source, 'c')}) IS DISTINCT FROM ({cols(source, 's')})")
    assignments = ", ".join([f"{ident(n)} = ch.{ident(n)}" for n in written]
                            + [f"{ident(n)} = NULL" for n in MERGE_RESETS.get(sheet.table, ())])
    returning = "ch.old_day::date AS old_day, c.*" if old_day_column else "c.*"
    update = (f"UPDATE {sheet.core_table} c SET {assignments} FROM ch "
              f"WHERE {key_match(sheet, 'c', 'ch')} RETURNING {returning}")
    if kind is None:
        return f"WITH ch AS ({changed}), r AS ({update}) SELECT count(*) FROM r"
    return f"""
        WITH ch AS ({changed}), r AS ({update}),
        days AS (
            INSERT INTO ops.changed_days (run_id, kind, day)
            SELECT DISTINCT %(run_id)s, '{kind}', d
            FROM r, LATERAL (VALUES (r.old_day), (r.{ident(old_day_column)}::date)) v(d)
            WHERE d IS NOT NULL
            ON CONFLICT DO NOTHING)
        SELECT count(*) FROM r"""


@cache
def rows_in_core(sheet: Sheet) -> str:
    """Core rows whose key is among this snapshot's valid staging rows (for reconciliation)."""
    if sheet.key is None:
        fp = fingerprint_sql(sheet, "s")
        staged = (f"SELECT {fp} AS row_fingerprint, row_number() OVER (PARTITION BY {fp} "
                  f"ORDER BY s.excel_row)::int AS occurrence FROM {sheet.staging_table} s WHERE NOT s.rejected")
        return (f"SELECT count(*) FROM {sheet.core_table} c JOIN ({staged}) s "
                f"ON {key_match(sheet, 'c', 's')}")
    return (f"SELECT count(*) FROM {sheet.core_table} c WHERE EXISTS (SELECT 1 FROM "
            f"{sheet.staging_table} s WHERE NOT s.rejected AND {key_match(sheet, 's', 'c')})")


@cache
def note_kept_rows(sheet: Sheet) -> str:
    """Tell, on each reject whose key still has a core row from an earlier snapshot, that the
    row was kept (a bad cell today must not erase yesterday's good row)."""
    return f"""
        UPDATE quarantine.rejects r
        SET detail = r.detail || '; the row already in core with this key was kept, not deleted'
        FROM {sheet.staging_table} s
        JOIN protected p ON {key_match(sheet, 'p', 's')}
        WHERE r.run_id = %(run_id)s AND r.sheet = %(sheet)s AND r.excel_row = s.excel_row
          AND EXISTS (SELECT 1 FROM {sheet.core_table} c WHERE {key_match(sheet, 'c', 's')})"""
