"""Rows kept but flagged: orphan references and impossible dates, into ``ops.data_quality_issues``.

Each kind's rows are replaced as a whole when it is looked for again (in one transaction), so
re-running gives the same rows; a kind none of whose tables changed since is not looked for
again (``refresh_issues``). Each issue is one SQL statement: a code, the table, the record's
key, a detail.
Orphan checks are generated from the contract: every column that ``references`` another sheet's
key gets one (``orphan:<Sheet>.<Header>``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from prodplan_pipeline import watermarks
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

WATERMARK = "data_quality_issues"  # the issues as a whole; each kind has its own beside it


@dataclass(frozen=True)
class Issue:
    code: str
    table: str
    description: str
    select: str  # yields (record_key, detail)
    reads: tuple[str, ...]  # the core tables ``select`` reads: it is looked for again when one changes

    @property
    def watermark(self) -> str:
        """The ops.watermarks entry recording the last core change this kind was looked for after."""
        return f"{WATERMARK}:{self.code}"


def _record_key(sheet: Sheet, alias: str) -> str:
    return " || '/' || ".join(f"coalesce({alias}.{n}::text, 'NULL')" for n in sheet.key_names)


def _orphan_issue(child: Sheet, column: Column) -> Issue:
    """Rows whose reference (a contract column with ``references``) finds no row."""
    parent_name, parent_header = column.references.split(".")
    parent = contract_sheet(parent_name)
    parent_column = parent.column(parent_header).name
    return Issue(
        f"orphan:{child.name}.{column.header}",
        child.core_table,
        f"{child.name} rows whose {column.header} is not a {parent_name}.{parent_header}",
        f"""SELECT {_record_key(child, "x")}, '{column.header} ' || x.{column.name} || ' is not in {parent_name}'
            FROM {child.core_table} x
            WHERE x.{column.name} IS NOT NULL AND NOT EXISTS
                  (SELECT 1 FROM {parent.core_table} p WHERE p.{parent_column} = x.{column.name})""",
        (child.core_table, parent.core_table),
    )


def _implausible_issue(sheet: Sheet, column: Column) -> Issue:
    """Rows with a timestamp outside the contract's plausible-time window (kept, not used)."""
    return Issue(
        f"implausible_timestamp:{sheet.name}.{column.header}",
        sheet.core_table,
        f"{sheet.name} rows whose {column.header} is outside {PLAUSIBLE_FROM:%Y-%m-%d}..{PLAUSIBLE_TO:%Y-%m-%d} "
        "(kept; left out of durations, lead times, on-time flags, defect times and WIP)",
        f"""SELECT {_record_key(sheet, "x")}, '{column.header} ' || x.{column.name} || ' is outside the '
                   || 'plausible window {PLAUSIBLE_FROM:%Y-%m-%d}..{PLAUSIBLE_TO:%Y-%m-%d}'
            FROM {sheet.core_table} x
            WHERE x.{column.name} IS NOT NULL AND NOT {plausible(f"x.{column.name}")}""",
        (sheet.core_table,),
    )


# Generated from the contract: its references and its timestamp columns; plus the two
# impossible date orders it names.
ISSUES = (
    tuple(_orphan_issue(s, c) for s in SHEETS for c in s.columns if c.references)
    + tuple(_implausible_issue(s, c) for s in SHEETS for c in s.columns if c.type is ColumnType.TIMESTAMP)
    + (
        Issue(
            "order_finished_before_created",
            "core.ordens_fabrico",
            "orders finishing before they were created (excluded from lead times)",
            """SELECT of_id::text, 'finished ' || of_data_acabamento || ', created ' || of_data_criacao
             FROM core.ordens_fabrico WHERE of_data_acabamento < of_data_criacao""",
            ("core.ordens_fabrico",),
        ),
        Issue(
            "phase_ends_before_start",
            "core.fases_ordem_fabrico",
            "phase rows ending before they start (duration left NULL)",
            """SELECT fase_of_id::text, 'ends ' || fase_of_fim || ', starts ' || fase_of_inicio
             FROM core.fases_ordem_fabrico WHERE fase_of_fim < fase_of_inicio""",
            ("core.fases_ordem_fabrico",),
        ),
    )
)


def reconcile_orphans(conn, only: Collection[str] | None = None) -> dict[str, int]:
    """Replace ``ops.data_quality_issues``' rows of every issue kind (or of the codes in
    ``only``) with the current issues; return counts by code, of every kind (within the
    caller's transaction, so readers see the old set or the new one)."""
    chosen = [issue for issue in ISSUES if only is None or issue.code in only]
    counts = {} if only is None else stored_issue_counts(conn)
    with conn.cursor() as cur:
        if only is None:  # every row, a retired kind's too
            cur.execute("DELETE FROM ops.data_quality_issues")
        else:
            cur.execute(
                "DELETE FROM ops.data_quality_issues WHERE issue_code = ANY (%s)", ([issue.code for issue in chosen],)
            )
        for issue in chosen:
            cur.execute(
                f"INSERT INTO ops.data_quality_issues (issue_code, table_name, record_key, detail) "
                f"SELECT %s, %s, k, d FROM ({issue.select}) AS found(k, d)",
                (issue.code, issue.table),
            )
            counts[issue.code] = cur.rowcount
    return counts


def refresh_issues(conn, change: int) -> tuple[dict[str, int], list[str]]:
    """Look again for the issue kinds one of whose tables an ingestion changed since the kind
    was last looked for (an employees-only change leaves the ~287k orphan links of the phase
    rows as they were); record ``change``, the last core change, for them. Returns the counts
    of every kind and the codes looked for again."""
    stale = watermarks.stale(conn, ISSUES)
    counts = reconcile_orphans(conn, [issue.code for issue in stale])
    for issue in stale:
        watermarks.advance(conn, issue.watermark, change)
    return counts, [issue.code for issue in stale]


def stored_issue_counts(conn) -> dict[str, int]:
    """The issues as last reconciled, by code, in one pass (the same figures a run reports)."""
    with conn.cursor() as cur:
        cur.execute("SELECT issue_code, count(*) FROM ops.data_quality_issues GROUP BY issue_code")
        stored = dict(cur.fetchall())
    return {**{i.code: 0 for i in ISSUES}, **stored}
