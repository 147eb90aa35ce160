"""Ingestion end to end on real data: every Excel row reconciled, idempotent re-runs, the shrink
guard, changed days, partition moves, and a process killed in the middle of a merge."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date, timedelta

import psycopg2
import pytest

from prodplan_pipeline.contract import SHEETS
from prodplan_pipeline.ingest.pipeline import ingest_workbook
from prodplan_pipeline.warehouse import Warehouse
from prodplan_pipeline.warehouse.connection import libpq_dsn
from prodplan_pipeline.workbook.sample import write_sample
from prodplan_pipeline_tests.warehouse_queries import checksums, query
from prodplan_pipeline_tests.workbook_edit import edited, header_index

# --- the real sample (or its generated stand-in, see conftest.real_sample) ------------------------


@pytest.fixture(scope="module")
def real(databases, real_sample):
    warehouse = databases.warehouse("real")
    result = ingest_workbook(warehouse, real_sample.path)
    return warehouse, result, real_sample.facts


def test_reconciliation_closes_for_all_nine_sheets(real):
    warehouse, result, facts = real
    assert result.passed
    for name, check in result.reconciled.items():
        assert check.rows_excel == facts["sheets"][name]["rows"], name
        assert check.rows_rejected == 0, name
        assert check.rows_in_core + check.rows_duplicate == check.rows_excel, name


def test_core_holds_the_distinct_keys_and_duplicates_are_counted(real):
    warehouse, result, facts = real
    for s in SHEETS:
        expected = facts["sheets"][s.name].get("distinct_keys", facts["sheets"][s.name]["rows"])
        assert query(warehouse, f"SELECT count(*) FROM {s.core_table}")[0][0] == expected, s.name
        # exact copies collapse onto one key; the keyless defects sheet keeps every row
        collapsed = facts["sheets"][s.name]["exact_duplicate_rows"] if s.key else 0
        assert result.merged[s.name].counts.duplicate == collapsed, s.name
    employees = facts["sheets"]["Funcionarios"]
    assert result.reconciled["Funcionarios"].rows_in_core == employees["distinct_keys"]
    assert result.reconciled["Funcionarios"].rows_duplicate == employees["exact_duplicate_rows"] > 0


def test_every_defect_row_lands(real):
    warehouse, result, facts = real
    rows = facts["sheets"]["OrdemFabricoErros"]["rows"]
    assert query(warehouse, "SELECT count(*) FROM core.erros_ordem_fabrico")[0][0] == rows
    assert result.reconciled["OrdemFabricoErros"].rows_duplicate == 0


def test_phase_quirks_are_kept_not_rejected(real):
    warehouse, _, facts = real
    ((inverted, open_, orphans),) = query(
        warehouse,
        """
        SELECT count(*) FILTER (WHERE fase_of_fim < fase_of_inicio),
               count(*) FILTER (WHERE fase_of_fim IS NULL),
               count(*) FILTER (WHERE fase_of_of_id NOT IN (SELECT of_id FROM core.ordens_fabrico))
        FROM core.fases_ordem_fabrico""",
    )
    assert inverted == facts["phases"]["fim_lt_inicio_rows"]
    assert open_ == facts["phases"]["open_phases_fim_null"]
    assert orphans == facts["phases"]["orphan_ofid_rows"]
    # event_time is set by the merge, and every row sits in its month's partition
    assert query(warehouse, "SELECT count(*) FROM core.fases_ordem_fabrico_default")[0][0] == 0
    assert (
        query(
            warehouse,
            "SELECT count(*) FROM core.fases_ordem_fabrico "
            "WHERE event_time IS DISTINCT FROM coalesce(fase_of_fim, fase_of_inicio)",
        )[0][0]
        == 0
    )


def test_a_second_ingest_changes_nothing(real, real_sample):
    warehouse, _, _ = real
    before = checksums(warehouse)
    again = ingest_workbook(warehouse, real_sample.path)
    assert again.passed
    assert {o.status for o in again.staged.values()} == {"skipped_unchanged"}
    forced = ingest_workbook(warehouse, real_sample.path, force=True)
    assert forced.passed
    for name, merged in forced.merged.items():
        c = merged.counts
        assert (c.inserted, c.updated, c.deleted) == (0, 0, 0), name
        assert c.unchanged == forced.reconciled[name].rows_in_core, name
    assert checksums(warehouse) == before


# --- synthetic workbooks: changes between snapshots ---------------------------------------------


def test_shrink_guard_refuses_a_sheet_that_lost_too_many_rows(databases, small_sample, tmp_path):
    warehouse = databases.warehouse("shrink")
    assert ingest_workbook(warehouse, small_sample).passed
    before = checksums(warehouse)

    def drop_40_percent_of_links(book):
        ws = book["FuncionariosFaseOrdemFabrico"]
        ws.delete_rows(2, int((ws.max_row - 1) * 0.4))

    shrunk = edited(small_sample, tmp_path / "shrunk.xlsx", drop_40_percent_of_links)
    result = ingest_workbook(warehouse, shrunk)
    check = result.reconciled["FuncionariosFaseOrdemFabrico"]
    assert not result.passed and not check.passed and check.status == "refused"
    assert "more than the 20% allowed" in check.likely_causes()
    assert checksums(warehouse) == before, "a refused merge changes nothing"

    # a smaller loss is a real deletion and goes through
    def drop_5_percent(book):
        ws = book["FuncionariosFaseOrdemFabrico"]
        ws.delete_rows(2, int((ws.max_row - 1) * 0.05))

    result = ingest_workbook(warehouse, edited(small_sample, tmp_path / "trim.xlsx", drop_5_percent))
    assert result.passed and result.merged["FuncionariosFaseOrdemFabrico"].counts.deleted > 0


def test_changed_phases_move_partition_and_record_exactly_their_days(databases, small_sample, tmp_path):
    """An open phase that closes a month later changes its event_time, i.e. its partition: it
    must move (one row per fase_of_id), and the changed days are its old and new day."""
    from prodplan_pipeline.derived.backfill import backfill_phases

    warehouse = databases.warehouse("moves")
    assert ingest_workbook(warehouse, small_sample).passed
    phase_id, inicio = query(
        warehouse,
        """
        SELECT fase_of_id, fase_of_inicio FROM core.fases_ordem_fabrico
        WHERE fase_of_fim IS NULL ORDER BY fase_of_id LIMIT 1""",
    )[0]
    closed_at = inicio.replace(microsecond=0) + timedelta(days=40)

    def close_phase(book):
        ws = book["FasesOrdemFabrico"]
        id_col, fim_col = header_index(ws, "FaseOf_Id"), header_index(ws, "FaseOf_Fim")
        for row in ws.iter_rows(min_row=2):
            if row[id_col - 1].value == phase_id:
                row[fim_col - 1].value = closed_at
                return
        raise AssertionError("phase row not found")

    result = ingest_workbook(warehouse, edited(small_sample, tmp_path / "closed.xlsx", close_phase))
    assert result.passed
    assert result.merged["FasesOrdemFabrico"].counts.updated == 1
    rows = query(
        warehouse,
        "SELECT tableoid::regclass::text, event_time FROM core.fases_ordem_fabrico WHERE fase_of_id = %s",
        (phase_id,),
    )
    assert rows == [(f"core.fases_ordem_fabrico_p{closed_at:%Y%m}", closed_at)]
    days = query(warehouse, "SELECT kind, day FROM ops.changed_days WHERE run_id = %s ORDER BY day", (result.run_id,))
    phase_days = [d for k, d in days if k == "phase_event"]
    assert phase_days == sorted({inicio.date(), closed_at.date()})
    # the merge wrote the derived values with the row: the backfill finds nothing to fix
    assert query(
        warehouse, "SELECT is_open, duration_seconds FROM core.fases_ordem_fabrico WHERE fase_of_id = %s", (phase_id,)
    ) == [(False, (closed_at - inicio).total_seconds())]
    with warehouse.connect() as conn:
        assert backfill_phases(conn).rows_written == 0
        assert backfill_phases(conn, full=True).rows_written == 0
    assert query(
        warehouse, "SELECT is_open, duration_seconds FROM core.fases_ordem_fabrico WHERE fase_of_id = %s", (phase_id,)
    ) == [(False, (closed_at - inicio).total_seconds())]


# --- the phase statistics follow the groups a snapshot changed --------------------------------

EVERY_DAY = (date(1990, 1, 1), date(2100, 1, 1))


def _refresh_phase_statistics(warehouse) -> list:
    """What the refresh runs do for the phase statistics: each pending range refreshed."""
    from prodplan_pipeline.analytics.aggregates import PHASE_STATS
    from prodplan_pipeline.analytics.convergence import pending_work, refresh_days

    with warehouse.connect() as conn:
        ranges = [r for r in pending_work(conn, *EVERY_DAY).ranges if PHASE_STATS.table in r.aggregates]
        return [refresh_days(conn, PHASE_STATS.table, r.first, r.last + timedelta(days=1), *EVERY_DAY) for r in ranges]


def _differences_from_every_fact(warehouse) -> tuple[int, int]:
    """Rows of the phase statistics that a recomputation from every fact lacks, and vice versa."""
    from prodplan_pipeline.analytics.aggregates import PHASE_STATS

    everything = PHASE_STATS.select_in(False)
    bounds = {"start": EVERY_DAY[0], "end": EVERY_DAY[1]}
    ((extra, missing),) = query(
        warehouse,
        f"""SELECT (SELECT count(*) FROM (SELECT * FROM {PHASE_STATS.table} EXCEPT ALL ({everything})) a),
                   (SELECT count(*) FROM (({everything}) EXCEPT ALL SELECT * FROM {PHASE_STATS.table}) b)""",
        {**bounds},
    )
    return extra, missing


def test_the_phase_statistics_recompute_only_the_groups_a_snapshot_changed(databases, small_sample, tmp_path):
    """A re-export that moves a phase to another day, another phase and another order, gives an
    order another product and a phase another key: the commit records the groups each change
    left and entered, the refresh recomputes those alone, and the statistics equal those of
    every fact. A snapshot that recorded no groups (an older run) makes it recompute whole days,
    to the same rows."""
    warehouse = databases.warehouse("groups")
    assert ingest_workbook(warehouse, small_sample).passed
    first_reports = _refresh_phase_statistics(warehouse)
    assert first_reports and all(r.changed_groups is None for r in first_reports), "a first load: whole days"
    assert _differences_from_every_fact(warehouse) == (0, 0)
    phases = query(
        warehouse,
        """SELECT f.fase_of_id, f.fase_of_of_id, f.fase_of_fase_id FROM core.fases_ordem_fabrico f
           JOIN core.ordens_fabrico o ON o.of_id = f.fase_of_of_id
           WHERE f.duration_seconds IS NOT NULL ORDER BY f.fase_of_id LIMIT 6""",
    )
    (moved, _, _), (rephased, _, fase), (reordered, order, _), (rekeyed, _, _) = phases[:4]
    (other_order, other_product), (product_changed, product) = query(
        warehouse,
        """SELECT of_id, of_produto_id FROM core.ordens_fabrico o
           WHERE EXISTS (SELECT 1 FROM core.fases_ordem_fabrico f WHERE f.fase_of_of_id = o.of_id
                         AND f.duration_seconds IS NOT NULL) AND of_id <> %s ORDER BY of_id LIMIT 2""",
        (order,),
    )
    ((other_fase,),) = query(warehouse, "SELECT min(fase_id) FROM core.fases_catalogo WHERE fase_id <> %s", (fase,))
    ((new_key,),) = query(warehouse, "SELECT max(fase_of_id) + 1 FROM core.fases_ordem_fabrico")
    new_product = other_product if other_product != product else product + 1

    def changes(book):
        ws = book["FasesOrdemFabrico"]
        at = {h: header_index(ws, h) - 1 for h in ("FaseOf_Id", "FaseOf_OfId", "FaseOf_FaseId", "FaseOf_Fim")}
        for row in ws.iter_rows(min_row=2):
            key = row[at["FaseOf_Id"]].value
            if key == moved:
                row[at["FaseOf_Fim"]].value = row[at["FaseOf_Fim"]].value + timedelta(days=3, hours=2)
            elif key == rephased:
                row[at["FaseOf_FaseId"]].value = other_fase
            elif key == reordered:
                row[at["FaseOf_OfId"]].value = other_order
            elif key == rekeyed:
                row[at["FaseOf_Id"]].value = new_key
        orders = book["OrdensFabrico"]
        of_id, produto = header_index(orders, "Of_Id") - 1, header_index(orders, "Of_ProdutoId") - 1
        for row in orders.iter_rows(min_row=2):
            if row[of_id].value == product_changed:
                row[produto].value = new_product

    result = ingest_workbook(warehouse, edited(small_sample, tmp_path / "groups.xlsx", changes))
    assert result.passed
    assert result.merged["FasesOrdemFabrico"].counts.updated == 3
    assert result.merged["OrdensFabrico"].counts.updated == 1
    ((recorded, groups),) = query(
        warehouse,
        """SELECT i.phase_groups, (SELECT count(*) FROM ops.changed_phase_groups g WHERE g.run_id = i.run_id)
           FROM ops.ingestion_runs i WHERE i.run_id = %s""",
        (result.run_id,),
    )
    assert recorded and groups > 0
    reports = _refresh_phase_statistics(warehouse)
    assert reports and all(r.changed_groups == groups for r in reports), [r.changed_groups for r in reports]
    assert sum(r.rows_written for r in reports) > 0
    assert _differences_from_every_fact(warehouse) == (0, 0)

    def close_again(book):
        ws = book["FasesOrdemFabrico"]
        key, fim = header_index(ws, "FaseOf_Id") - 1, header_index(ws, "FaseOf_Fim") - 1
        for row in ws.iter_rows(min_row=2):
            if row[key].value == moved:
                row[fim].value = row[fim].value + timedelta(days=5)

    again = ingest_workbook(warehouse, edited(tmp_path / "groups.xlsx", tmp_path / "again.xlsx", close_again))
    assert again.passed
    with warehouse.connect() as conn, conn.cursor() as cur:  # as if it were a run from before groups
        cur.execute("UPDATE ops.ingestion_runs SET phase_groups = false WHERE run_id = %s", (again.run_id,))
    reports = _refresh_phase_statistics(warehouse)
    assert reports and all(r.changed_groups is None for r in reports)
    assert _differences_from_every_fact(warehouse) == (0, 0)


# --- a process killed in the middle of a merge --------------------------------------------------

MERGE_STATEMENT = (
    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query LIKE %s "
    "AND state = 'active' AND pid <> pg_backend_pid()"
)


def test_a_process_killed_mid_merge_leaves_core_whole_and_the_rerun_completes(databases, tmp_path):
    workbook = tmp_path / "kill.xlsx"
    # big enough that the phase merge runs for a while (it is polled every 5 ms), no bigger
    write_sample(workbook, scale=0.05, seed=3)
    victim = databases.warehouse("killed")
    reference = databases.warehouse("reference")
    env = {**os.environ, "PRODPLAN_HOME": str(tmp_path / "home")}
    script = (
        "import sys; from prodplan_pipeline.warehouse import Warehouse; "
        "from prodplan_pipeline.ingest.pipeline import ingest_workbook; "
        "ingest_workbook(Warehouse(sys.argv[1]), sys.argv[2])"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, victim.url.render_as_string(hide_password=False), str(workbook)], env=env
    )
    killed_during = _kill_when_merging(process, victim)
    assert killed_during, "the merge of the phases was never seen running"
    # The killed transaction is rolled back. A new connection per look: pg_stat_activity is one
    # snapshot per transaction, so a loop in one transaction would see the statement forever.
    deadline = time.monotonic() + 30
    while query(victim, MERGE_STATEMENT, (victim.url.database, "%INTO core.fases_ordem_fabrico%")):
        assert time.monotonic() < deadline, "the killed merge was still running after 30 s"
        time.sleep(0.1)
    assert query(victim, "SELECT count(*) FROM core.fases_ordem_fabrico")[0][0] == 0, (
        "the interrupted merge left no half-loaded table"
    )
    assert ingest_workbook(victim, workbook).passed
    assert ingest_workbook(reference, workbook).passed
    assert checksums(victim) == checksums(reference)
    statuses = dict(query(victim, "SELECT run_id, status FROM ops.ingestion_runs"))
    assert "interrupted" in statuses.values(), "the interrupted run is closed as interrupted"


def _kill_when_merging(process: subprocess.Popen, warehouse: Warehouse) -> bool:
    conn = psycopg2.connect(libpq_dsn(warehouse.url))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            while process.poll() is None:
                cur.execute(MERGE_STATEMENT, (warehouse.url.database, "%INSERT INTO core.fases_ordem_fabrico%"))
                if cur.fetchall():
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    return True
                time.sleep(0.005)
        return False
    finally:
        conn.close()


def test_sheets_merge_as_they_are_staged_in_the_order_their_values_need(databases, small_sample):
    """The snapshot's transaction merges a sheet once it is staged and the sheets it reads are
    merged (orders before phases, both before defects); nothing is visible before the commit,
    and the result is the same as staging everything first."""
    from prodplan_pipeline.contract import sheet
    from prodplan_pipeline.ingest import runs, steps
    from prodplan_pipeline.ingest.commit import SnapshotCommit
    from prodplan_pipeline.workbook.inspect import inspect_workbook

    warehouse = databases.warehouse("pipelined")
    info = inspect_workbook(small_sample)
    with warehouse.connect() as conn:
        run_id = runs.start_run(conn, "pipelined", info, False)
    orders, phases, defects, employees = (
        sheet(n) for n in ("OrdensFabrico", "FasesOrdemFabrico", "OrdemFabricoErros", "Funcionarios")
    )
    with SnapshotCommit(warehouse, run_id, list(SHEETS), 0.2) as commit:
        for s in (defects, phases, employees):
            steps.stage(warehouse, run_id, info, s)
            commit.staged(s)
        assert set(commit.outcome.merged) == {"Funcionarios"}, "defects wait for phases, phases for orders"
        steps.stage(warehouse, run_id, info, orders)
        commit.staged(orders)
        assert {"OrdensFabrico", "FasesOrdemFabrico", "OrdemFabricoErros"} <= set(commit.outcome.merged)
        # (the orders: the phases' parent is locked by the partitions this commit creates)
        assert query(warehouse, f"SELECT count(*) FROM {orders.core_table}") == [(0,)], "not committed yet"
        for s in SHEETS:
            if s.name not in commit.outcome.merged:
                steps.stage(warehouse, run_id, info, s)
                commit.staged(s)
        outcome = commit.finish()
    assert outcome.committed and all(r.passed for r in outcome.reconciled.values())
    staged_first = databases.warehouse("staged_first")
    assert ingest_workbook(staged_first, small_sample).passed
    assert checksums(warehouse) == checksums(staged_first)
    timed = query(warehouse, f"SELECT count(*) FROM {defects.core_table} WHERE ofch_event_time IS NOT NULL")
    assert timed[0][0] > 0, "the defects' times came from the phases merged before them"
