"""Watermarks follow the last ingestion that changed core, and only that."""

from __future__ import annotations

from prodplan_pipeline import watermarks
from prodplan_pipeline.ingest.pipeline import ingest_workbook
from prodplan_pipeline.workbook.sample import write_sample
from prodplan_pipeline_tests.workbook_edit import edited


def test_a_watermark_is_caught_up_until_an_ingestion_changes_core(databases, tmp_path):
    warehouse = databases.warehouse("watermarks")
    first, second = tmp_path / "a.xlsx", tmp_path / "b.xlsx"
    write_sample(first, scale=0.005, seed=1)

    def rename_a_phase(book):
        book["Fases"]["B2"].value = "Laminagem (renamed)"

    edited(first, second, rename_a_phase)
    with warehouse.connect() as conn:
        assert watermarks.caught_up(conn, "gates") == (False, 0)
    run = ingest_workbook(warehouse, first).run_id
    with warehouse.connect() as conn:
        assert watermarks.caught_up(conn, "gates") == (False, run)
        watermarks.advance(conn, "gates", run)
    ingest_workbook(warehouse, first)  # unchanged: every sheet skipped
    ingest_workbook(warehouse, first, force=True)  # re-merged, but no row changed
    with warehouse.connect() as conn:
        assert watermarks.caught_up(conn, "gates") == (True, run)
    changed = ingest_workbook(warehouse, second).run_id
    with warehouse.connect() as conn:
        assert watermarks.caught_up(conn, "gates") == (False, changed)
        assert watermarks.read(conn, "gates") == str(run)
