"""SQL statements generated from the contract, one set per sheet.

Identifiers come only from ``contract.py`` (checked to be plain snake_case here); values are
always bound parameters. Each function returns the statement for one sheet.

The merge compares the snapshot with core in a single pass (a full outer join into a small
``diff`` table: rows to insert, update or delete) and then applies the diff; unchanged rows are
read once and never written.
"""

from __future__ import annotations

import re
from functools import cache

from prodplan_pipeline.contract import SURROGATE_KEY, ColumnType, Sheet
from prodplan_pipeline.warehouse.changed_days import NO_PHASE_GROUPS, record_changed_days, record_changed_phase_groups

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")

# A defect's day is its derived time, written with the row (see snapshot()); a deleted
# defect's diff row holds its old values.
RECORD_DEFECT_DAYS = record_changed_days("SELECT 'defect', ofch_event_time::date FROM diff")
# An order's product decides which aggregate rows its phases and defects count in: a new,
# changed or deleted order changes the days of its phases and defects too (the orders merge
# runs first in the snapshot's commit, so this sees the phases and defects before theirs).
RECORD_ORDER_DEPENDENT_DAYS = record_changed_days("""
        SELECT 'phase_event', f.event_time::date
        FROM diff d JOIN core.fases_ordem_fabrico f ON f.fase_of_of_id = d.of_id
        UNION ALL
        SELECT 'defect', e.ofch_event_time::date
        FROM diff d JOIN core.erros_ordem_fabrico e ON e.erro_of_id = d.of_id""")
# The phase statistics' groups a phase merge moved: each changed row's old and new (day, phase)
# with the product of the order it names (the orders are merged first in the commit, so this is
# the new product; an order whose product changed records its phases' old groups itself).
RECORD_PHASE_GROUPS = record_changed_phase_groups("""
        SELECT g.day, o.of_produto_id, g.fase_id
        FROM diff, LATERAL (VALUES (old_event_time::date, old_fase_of_of_id, old_fase_of_fase_id),
                                   (CASE WHEN action <> 'delete' THEN event_time::date END,
                                    fase_of_of_id, fase_of_fase_id)) g(day, of_id, fase_id)
        JOIN core.ordens_fabrico o ON o.of_id = g.of_id""")
# ... and those an order's change moved: every phase of the order under its old and new product
# (the phases as they were: their own merge comes after and records their moves).
RECORD_ORDER_DEPENDENT_GROUPS = record_changed_phase_groups("""
        SELECT f.event_time::date, p.produto_id, f.fase_of_fase_id
        FROM diff d JOIN core.fases_ordem_fabrico f ON f.fase_of_of_id = d.of_id,
             LATERAL (VALUES (d.old_of_produto_id),
                             (CASE WHEN d.action <> 'delete' THEN d.of_produto_id END)) p(produto_id)""")
# A NULL key value must still match itself in a hash join: compared through a sentinel.
NULL_SENTINEL = {ColumnType.TIMESTAMP: "'-infinity'::timestamp"}


def ident(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a contract identifier: {name!r}")
    return name


def cols(names, alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + ident(n) for n in names)


def _nullable_keys(sheet: Sheet) -> dict[str, ColumnType]:
    return {c.name: c.type for c in sheet.columns if not c.required and c.name in sheet.key_names}


def key_match(sheet: Sheet, left: str, right: str) -> str:
    """Join condition on the sheet's key; NULL-safe where a key column may be NULL."""
    nullable = _nullable_keys(sheet)
    return " AND ".join(
        f"{left}.{ident(n)} {'IS NOT DISTINCT FROM' if n in nullable else '='} {right}.{ident(n)}"
        for n in sheet.key_names
    )


def hash_key_match(sheet: Sheet, left: str, right: str) -> str:
    """Like :func:`key_match`, but hash-joinable (a full outer join needs that)."""
    nullable = _nullable_keys(sheet)
    parts = []
    for n in sheet.key_names:
        if n in nullable:
            sentinel = NULL_SENTINEL[nullable[n]]
            parts.append(f"coalesce({left}.{ident(n)}, {sentinel}) = coalesce({right}.{ident(n)}, {sentinel})")
        else:
            parts.append(f"{left}.{ident(n)} = {right}.{ident(n)}")
    return " AND ".join(parts)


def presence_column(sheet: Sheet) -> str:
    """A key column that is never NULL: NULL after an outer join means 'no such row'."""
    return next(n for n in sheet.key_names if n not in _nullable_keys(sheet))


def fingerprint_sql(sheet: Sheet, alias: str) -> str:
    return f"md5(ROW({cols(sheet.column_names, alias)})::text)"


def valid_rows(sheet: Sheet) -> str:
    """The snapshot: staging rows that passed typing and are not duplicates of a kept row."""
    return f"{sheet.staging_table} s WHERE NOT s.rejected AND s.duplicate_of IS NULL"


@cache
def snapshot(sheet: Sheet) -> str:
    """The snapshot with the merge-computed columns: a view over staging for keyed sheets (no
    copy), a table for the keyless defects (fingerprints and times are computed once)."""
    extra = [f"{expr} AS {ident(name)}" for name, expr in sheet.computed.items()]
    joins = sheet.joins_for("s")
    rows = valid_rows(sheet).replace(" WHERE ", f" {joins} WHERE " if joins else " WHERE ", 1)
    if sheet.key is not None:
        select = ", ".join(["s.excel_row", cols(sheet.column_names, "s"), *extra])
        return f"CREATE OR REPLACE TEMP VIEW snap AS SELECT {select} FROM {rows}"
    fp = fingerprint_sql(sheet, "s")
    extra += [
        f"{fp} AS {SURROGATE_KEY[0]}",
        f"row_number() OVER (PARTITION BY {fp} ORDER BY s.excel_row)::int AS {SURROGATE_KEY[1]}",
    ]
    select = ", ".join(["s.excel_row", cols(sheet.column_names, "s"), *extra])
    return f"CREATE TEMP TABLE snap ON COMMIT DROP AS SELECT {select} FROM {rows}"


@cache
def key_duplicates(sheet: Sheet) -> str:
    """Rows sharing a key with another row (flagged by the reader): exact copies of the kept
    (first) row, or different rows sharing its key (rejected)."""
    return f"""
        CREATE TEMP TABLE dup ON COMMIT DROP AS
        SELECT s.excel_row,
               min(s.excel_row) OVER (PARTITION BY {cols(sheet.key_names, "s")}) AS kept_row,
               min(s.excel_row) OVER (PARTITION BY {cols(sheet.column_names, "s")}) AS first_same
        FROM {sheet.staging_table} s WHERE NOT s.rejected AND s.key_repeated"""


@cache
def mark_duplicates(sheet: Sheet) -> str:
    return f"""UPDATE {sheet.staging_table} s SET duplicate_of = d.kept_row FROM dup d
               WHERE s.key_repeated AND s.excel_row = d.excel_row AND d.excel_row <> d.kept_row"""


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
               {raw_row_json(sheet, "s")}
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


def join_columns(sheet: Sheet) -> list[str]:
    """The columns other tables join on or a merge filters by: the key, the references, the
    partition key."""
    names = [*sheet.key_names, *(c.name for c in sheet.columns if c.references)]
    partition = sheet.partition_key
    return list(dict.fromkeys(names + ([partition] if partition else [])))


def _written_columns(sheet: Sheet) -> list[str]:
    surrogate = list(SURROGATE_KEY) if sheet.key is None else []
    return surrogate + list(sheet.column_names) + list(sheet.computed)


def _old_columns(sheet: Sheet) -> list[str]:
    """The core row's day, group columns and partition key before the change (for changed days
    and groups, and so that updates and deletes find the row in its partition)."""
    _, day = sheet.changed_days or (None, None)
    old = list(dict.fromkeys(([day] if day else []) + list(sheet.group_columns)))
    # an update or delete must find the row in its old partition (a changed key moves the row)
    partition = sheet.partition_key
    return old + ([partition] if partition and partition not in old else [])


@cache
def diff(sheet: Sheet, protected: bool) -> str:
    """One full outer join of snapshot and core: every row to insert, update or delete, with the
    new values (the old ones for a delete) and the old day / partition key."""
    present = presence_column(sheet)
    source = [n for n in sheet.column_names if n not in sheet.key_names]
    values = [
        f"CASE WHEN s.{present} IS NULL THEN c.{ident(n)} ELSE s.{ident(n)} END AS {ident(n)}"
        for n in _written_columns(sheet)
    ]
    old = [f"c.{ident(n)} AS old_{ident(n)}" for n in _old_columns(sheet)]
    changed = f"({cols(source, 'c')}) IS DISTINCT FROM ({cols(source, 's')})" if source else "false"
    keep = f" AND NOT EXISTS (SELECT 1 FROM protected p WHERE {key_match(sheet, 'p', 'c')})" if protected else ""
    return f"""
        CREATE TEMP TABLE diff ON COMMIT DROP AS
        SELECT CASE WHEN c.{present} IS NULL THEN 'insert' WHEN s.{present} IS NULL THEN 'delete'
                    ELSE 'update' END AS action, {", ".join(values + old)}
        FROM snap s FULL JOIN {sheet.core_table} c ON {hash_key_match(sheet, "s", "c")}
        WHERE c.{present} IS NULL OR (s.{present} IS NULL{keep})
           OR (s.{present} IS NOT NULL AND {changed})"""


@cache
def first_load_diff(sheet: Sheet) -> str:
    """When core is empty every snapshot row is an insert: a view, not a copy of the snapshot."""
    values = [f"s.{ident(n)}" for n in _written_columns(sheet)]
    old = [f"NULL::{_sql_type(sheet, n)} AS old_{ident(n)}" for n in _old_columns(sheet)]
    return f"CREATE OR REPLACE TEMP VIEW diff AS SELECT 'insert'::text AS action, {', '.join(values + old)} FROM snap s"


def _sql_type(sheet: Sheet, name: str) -> str:
    return next(t for n, t, _ in sheet.core_columns if n == name)


def _in_partition(sheet: Sheet, core: str, d: str) -> str:
    """Extra condition so a changed row is found in its (old) partition, not in all of them."""
    partition = sheet.partition_key
    return f" AND {core}.{ident(partition)} = {d}.old_{ident(partition)}" if partition else ""


@cache
def apply_deletes(sheet: Sheet) -> str:
    return (
        f"DELETE FROM {sheet.core_table} c USING diff d WHERE d.action = 'delete' "
        f"AND {key_match(sheet, 'c', 'd')}{_in_partition(sheet, 'c', 'd')}"
    )


@cache
def apply_updates(sheet: Sheet) -> str:
    written = [n for n in _written_columns(sheet) if n not in sheet.key_names]
    if not written:  # every column is part of the key: a row can be new or gone, never changed
        return "SELECT 1 WHERE false"
    assignments = ", ".join(f"{ident(n)} = d.{ident(n)}" for n in written)
    return (
        f"UPDATE {sheet.core_table} c SET {assignments} FROM diff d WHERE d.action = 'update' "
        f"AND {key_match(sheet, 'c', 'd')}{_in_partition(sheet, 'c', 'd')}"
    )


@cache
def apply_inserts(sheet: Sheet) -> str:
    written = cols(_written_columns(sheet))
    return f"INSERT INTO {sheet.core_table} ({written}) SELECT {written} FROM diff WHERE action = 'insert'"


@cache
def record_days(sheet: Sheet, first_load: bool = False) -> tuple[str, ...]:
    """Statements recording the days whose facts this merge changed (old and new day), and the
    phase statistics' groups it moved (none on a first load: its run says so instead)."""
    kind, day = sheet.changed_days or (None, None)
    if kind is None:
        return ()
    if day is None:
        return (RECORD_DEFECT_DAYS,)
    dependent = (RECORD_ORDER_DEPENDENT_DAYS,) if sheet.moves_dependent_days else ()
    groups = ()
    if sheet.group_columns:
        groups = (RECORD_ORDER_DEPENDENT_GROUPS if sheet.moves_dependent_days else RECORD_PHASE_GROUPS,)
        groups = (NO_PHASE_GROUPS,) if first_load else groups
    return (_record_own_days(kind, day), *dependent, *groups)


def _record_own_days(kind: str, day: str) -> str:
    return record_changed_days(f"""
        SELECT '{ident(kind)}', v.d
        FROM diff, LATERAL (VALUES (old_{ident(day)}::date),
                                   (CASE WHEN action <> 'delete' THEN {ident(day)}::date END)) v(d)""")


@cache
def rows_in_core(sheet: Sheet) -> str:
    """Core rows whose key is among this snapshot's valid staging rows (for reconciliation)."""
    if sheet.key is None:
        fp = fingerprint_sql(sheet, "s")
        staged = (
            f"SELECT {fp} AS row_fingerprint, row_number() OVER (PARTITION BY {fp} "
            f"ORDER BY s.excel_row)::int AS occurrence FROM {sheet.staging_table} s WHERE NOT s.rejected"
        )
        return f"SELECT count(*) FROM {sheet.core_table} c JOIN ({staged}) s ON {key_match(sheet, 'c', 's')}"
    return (
        f"SELECT count(*) FROM {sheet.core_table} c WHERE EXISTS (SELECT 1 FROM "
        f"{sheet.staging_table} s WHERE NOT s.rejected AND {key_match(sheet, 's', 'c')})"
    )


@cache
def note_kept_rows(sheet: Sheet) -> str:
    """Tell, on each reject whose key still has a core row from an earlier snapshot, that the
    row was kept (a bad cell today must not erase yesterday's good row)."""
    return f"""
        UPDATE quarantine.rejects r
        SET detail = r.detail || '; the row already in core with this key was kept, not deleted'
        FROM {sheet.staging_table} s
        JOIN protected p ON {key_match(sheet, "p", "s")}
        WHERE r.run_id = %(run_id)s AND r.sheet = %(sheet)s AND r.excel_row = s.excel_row
          AND EXISTS (SELECT 1 FROM {sheet.core_table} c WHERE {key_match(sheet, "c", "s")})"""
