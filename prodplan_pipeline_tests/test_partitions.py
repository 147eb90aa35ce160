"""Monthly partitions of core.fases_ordem_fabrico: created for the data, rows moved out of default."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from prodplan_pipeline.warehouse.monthly_partitions import (
    ensure_partitions,
    maintain_partitions,
    partition_summary,
)

INSERT_PHASE = """
    INSERT INTO core.fases_ordem_fabrico (fase_of_id, fase_of_of_id, fase_of_inicio, fase_of_fim,
        fase_of_coeficiente, fase_of_coeficiente_x, fase_of_fase_id, fase_of_peso,
        fase_of_retorno, fase_of_sequencia, event_time)
    VALUES (%(id)s, 1, %(t)s, %(t)s, 1, 0, 1, 0, 0, 1, %(t)s)"""

PARTITION_OF_ROW = """
    SELECT tableoid::regclass::text FROM core.fases_ordem_fabrico WHERE fase_of_id = %s"""


@pytest.fixture
def conn(databases):
    from prodplan_pipeline.warehouse import Warehouse

    warehouse = Warehouse(databases.create("partitions"))
    warehouse.migrate()
    with warehouse.connect() as connection:
        yield connection


def insert(conn, phase_id: int, when: datetime) -> None:
    with conn.cursor() as cur:
        cur.execute(INSERT_PHASE, {"id": phase_id, "t": when})


def partition_of(conn, phase_id: int) -> str:
    with conn.cursor() as cur:
        cur.execute(PARTITION_OF_ROW, (phase_id,))
        return cur.fetchone()[0]


def test_rows_in_the_default_partition_move_into_new_monthly_partitions(conn):
    insert(conn, 1, datetime(2023, 1, 15, 8, 0))
    insert(conn, 2, datetime(2023, 3, 31, 23, 59))
    assert partition_summary(conn) == {"partitions": 0, "default_rows": 2}
    assert ensure_partitions(conn, date(2023, 1, 1), date(2023, 3, 31)) == 3
    assert partition_of(conn, 1) == "core.fases_ordem_fabrico_p202301"
    assert partition_of(conn, 2) == "core.fases_ordem_fabrico_p202303"
    assert partition_summary(conn) == {"partitions": 3, "default_rows": 0}
    assert ensure_partitions(conn, date(2023, 1, 1), date(2023, 3, 31)) == 0, "idempotent"


def test_maintenance_covers_the_data_and_six_months_ahead_and_reports_default_rows(conn):
    insert(conn, 1, datetime(2024, 11, 2, 7, 30))
    insert(conn, 2, datetime(1900, 1, 1))  # a mistyped year: not worth 1,500 partitions
    report = maintain_partitions(conn, months_ahead=6, today=date(2025, 1, 20))
    assert report.first_month == date(1900, 1, 1)  # the data window, as reported
    assert partition_of(conn, 1) == "core.fases_ordem_fabrico_p202411"
    assert partition_of(conn, 2) == "core.fases_ordem_fabrico_default"
    assert report.default_rows == 1
    # 2000-01 .. 2025-07: the window starts at EARLIEST_PARTITION, ends 6 months after today
    assert report.partitions == (2025 - 2000) * 12 + 7
    again = maintain_partitions(conn, months_ahead=6, today=date(2025, 1, 20))
    assert again.created == 0 and again.partitions == report.partitions
