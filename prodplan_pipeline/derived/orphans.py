"""Rows kept but flagged: orphan references and impossible dates, into ``ops.data_quality_issues``.

The table is replaced as a whole on every evaluation (in one transaction), so re-running gives
the same rows. Each issue is one SQL statement: a code, the table, the record's key, a detail.
Orphan checks are generated from the contract: every column that ``references`` another sheet's
key gets one (``orphan:<Sheet>.<Header>``).
"""

from __future__ import annotations

from dataclasses import dataclass

from prodplan_pipeline.contract import (
    PLAUSIBLE_FROM,
    PLAUSIBLE_TO,
    SHEETS,
    Column,
    ColumnType,
    Sheet,
    plausible,
)
from prodplan_pipeline.contract import sheet as contract_sheet


@dataclass(frozen=True)
class Issue:
    code: str
    table: str
    description: str
    select: str  # yields (record_key, detail)


def _record_key(sheet: Sheet, alias: str) -> str:
    return " || '/' || ".join(f"coalesce({alias}.{n}::text, 'NULL')" for n in sheet.key_names)


def _orphan_issue(child: Sheet, column: Column) -> Issue:
    """Rows whose reference (a contract column with ``references``) finds no row."""
    parent_name, parent_header = column.references.split(".")
    parent = contract_sheet(parent_name)
    parent_column = parent.column(parent_header).name
    return Issue(
        f"orphan:{child.name}.{column.header}", child.core_table,
        f"{child.name} rows whose {column.header} is not a {parent_name}.{parent_header}",
        f"""SELECT {_record_key(child, 'x')}, '{column.header} ' || x.{column.name} || ' is not in {parent_name}'
            FROM {child.core_table} x
            WHERE x.{column.name} IS NOT NULL AND NOT EXISTS
                  (SELECT 1 FROM {parent.core_table} p WHERE p.{parent_column} = x.{column.name})""")


def _implausible_issue(sheet: Sheet, column: Column) -> Issue:
    """Rows with a timestamp outside the contract's plausible-time window (kept, not used)."""
    return Issue(
        f"implausible_timestamp:{sheet.name}.{column.header}", sheet.core_table,
        f"{sheet.name} rows whose {column.header} is outside {PLAUSIBLE_FROM:%Y-%m-%d}..{PLAUSIBLE_TO:%Y-%m-%d} "
        "(kept; left out of durations, lead times, on-time flags, defect times and WIP)",
        f"""SELECT {_record_key(sheet, 'x')}, '{column.header} ' || x.{column.name} || ' is outside the '
                   || 'plausible window {PLAUSIBLE_FROM:%Y-%m-%d}..{PLAUSIBLE_TO:%Y-%m-%d}'
            FROM {sheet.core_table} x
            WHERE x.{column.name} IS NOT NULL AND NOT {plausible(f'x.{column.name}')}""")


# Generated from the contract: its references and its timestamp columns; plus the two
# impossible date orders it names.
ISSUES = tuple(_orphan_issue(s, c) for s in SHEETS for c in s.columns if c.references) + tuple(
    _implausible_issue(s, c) for s in SHEETS for c in s.columns if c.type is ColumnType.TIMESTAMP) + (
    Issue("order_finished_before_created", "core.ordens_fabrico",
          "orders finishing before they were created (excluded from lead times)",
          """SELECT of_id::text, 'finished ' || of_data_acabamento || ', created ' || of_data_criacao
             FROM core.ordens_fabrico WHERE of_data_acabamento < of_data_criacao"""),
    Issue("phase_ends_before_start", "core.fases_ordem_fabrico",
          "phase rows ending before they start (duration left NULL)",
          """SELECT fase_of_id::text, 'ends ' || fase_of_fim || ', starts ' || fase_of_inicio
             FROM core.fases_ordem_fabrico WHERE fase_of_fim < fase_of_inicio"""),
)


def reconcile_orphans(conn) -> dict[str, int]:
    """Replace ``ops.data_quality_issues`` with the current issues; return counts by code
    (within the caller's transaction, so readers see the old set or the new one)."""
    counts = {}
    with conn.cursor() as cur:
        cur.execute("DELETE FROM ops.data_quality_issues")
        for issue in ISSUES:
            cur.execute(
                f"INSERT INTO ops.data_quality_issues (issue_code, table_name, record_key, detail) "
                f"SELECT %s, %s, k, d FROM ({issue.select}) AS found(k, d)",
                (issue.code, issue.table),
            )
            counts[issue.code] = cur.rowcount
    return counts


def stored_issue_counts(conn) -> dict[str, int]:
    """The issues as last reconciled, by code, in one pass (the same figures a run reports)."""
    with conn.cursor() as cur:
        cur.execute("SELECT issue_code, count(*) FROM ops.data_quality_issues GROUP BY issue_code")
        stored = dict(cur.fetchall())
    return {**{i.code: 0 for i in ISSUES}, **stored}
