"""Reading a test's warehouse: rows of a statement, and checksums of tables' content (the one
copy of each; test modules import them from here, not from one another)."""

from __future__ import annotations

from prodplan_pipeline.contract import SHEETS
from prodplan_pipeline.warehouse import Warehouse

# Row count and an order-independent md5 of a table's content ({table}: a name from a registry).
TABLE_CHECKSUM = "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"


def query(warehouse: Warehouse, statement: str, params: tuple = ()) -> list[tuple]:
    """The statement's rows ([] for a statement that returns none), in its own transaction."""
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall() if cur.description else []


def table_checksum(cur, table: str) -> str:
    """``table``'s checksum read through ``cur``: a transaction's own cursor sees its
    uncommitted rows."""
    cur.execute(TABLE_CHECKSUM.format(table=table))
    return cur.fetchone()[0]


def checksums(warehouse: Warehouse) -> dict[str, str]:
    """A checksum of every core table's content, by sheet table name."""
    with warehouse.connect() as conn, conn.cursor() as cur:
        return {s.table: table_checksum(cur, s.core_table) for s in SHEETS}
