"""Derived columns, orphan reconciliation and feature gates on the real sample (or its generated
stand-in), checked against facts and counts computed independently with pandas from the file."""

from __future__ import annotations

import pandas as pd
import pytest

from prodplan_pipeline.contract import SHEETS, ColumnType
from prodplan_pipeline.derived.backfill import backfill_defects, backfill_orders, backfill_phases
from prodplan_pipeline.derived.orphans import reconcile_orphans
from prodplan_pipeline.ingest.pipeline import ingest_workbook
from prodplan_pipeline.quality.gates import NOT_SUPPORTED, SUPPORTED, evaluate_gates, write_gates_report
from prodplan_pipeline_tests.warehouse_queries import query
from prodplan_pipeline_tests.workbook_facts import FACT_OF_GATE


@pytest.fixture(scope="module")
def derived(databases, real_sample):
    warehouse = databases.warehouse("derived")
    assert ingest_workbook(warehouse, real_sample.path).passed
    with warehouse.connect() as conn:
        reports = {"phases": backfill_phases(conn), "orders": backfill_orders(conn), "defects": backfill_defects(conn)}
        issues = reconcile_orphans(conn)
        gates = evaluate_gates(conn)
    return warehouse, reports, issues, gates, real_sample.facts


@pytest.fixture(scope="module")
def workbook_frames(real_sample) -> dict[str, pd.DataFrame]:
    """The workbook read by pandas (not the pipeline's reader), NULL text as NaN."""
    return real_sample.frames


def test_gate_rates_equal_the_facts_to_four_decimals(derived):
    warehouse, _, _, gates, facts = derived
    for gate in gates:
        assert round(gate.match_rate, 4) == round(facts["match_rates"][FACT_OF_GATE[gate.gate.feature]]["rate"], 4)
    stored = dict(query(warehouse, "SELECT feature, round(match_rate::numeric, 4)::float FROM ops.feature_gates"))
    assert stored == {g.gate.feature: round(g.match_rate, 4) for g in gates}


def test_per_employee_kpis_are_not_supported_by_the_data(derived, tmp_path):
    warehouse, _, _, gates, facts = derived
    by_feature = {g.gate.feature: g for g in gates}
    employee = by_feature["kpis_by_employee"]
    rate = facts["match_rates"][FACT_OF_GATE["kpis_by_employee"]]["rate"]
    assert employee.status == NOT_SUPPORTED and round(employee.match_rate, 4) == round(rate, 4) < 0.9
    assert "below the 90%" in employee.reason
    assert by_feature["quality_by_phase_timing"].status == SUPPORTED
    report = write_gates_report(gates, tmp_path).read_text()
    assert (
        f"| kpis_by_employee | FuncionarioFaseOf_FaseOfId → FaseOf_Id | {rate:.4f} | 0.90 | NOT_SUPPORTED_BY_DATA |"
    ) in report


def test_duration_is_null_exactly_for_open_and_inverted_phases(derived):
    warehouse, reports, _, _, facts = derived
    (null_durations,) = query(
        warehouse, "SELECT count(*) FROM core.fases_ordem_fabrico WHERE duration_seconds IS NULL"
    )[0]
    phases = facts["phases"]
    assert null_durations == phases["open_phases_fim_null"] + phases["fim_lt_inicio_rows"]
    assert reports["phases"].counts["duration_null_open_phase"] == phases["open_phases_fim_null"]
    assert (
        query(
            warehouse,
            """SELECT count(*) FROM core.fases_ordem_fabrico
                               WHERE is_open IS DISTINCT FROM (fase_of_fim IS NULL) OR is_done = is_open
                                  OR duration_seconds <> extract(epoch FROM fase_of_fim - fase_of_inicio)""",
        )[0][0]
        == 0
    )


def test_defect_time_is_null_only_for_defects_of_missing_orders(derived):
    warehouse, reports, _, _, _ = derived
    nulls, of_missing_orders = query(
        warehouse,
        """
        SELECT count(*), count(*) FILTER (WHERE NOT EXISTS
               (SELECT 1 FROM core.ordens_fabrico o WHERE o.of_id = e.erro_of_id))
        FROM core.erros_ordem_fabrico e WHERE ofch_event_time IS NULL""",
    )[0]
    assert nulls == of_missing_orders
    # every defect whose inspection phase row exists takes that row's time
    assert (
        query(
            warehouse,
            """
        SELECT count(*) FROM core.erros_ordem_fabrico e JOIN core.fases_ordem_fabrico f
          ON f.fase_of_id = e.erro_fase_of_avaliacao
        WHERE e.ofch_event_time IS DISTINCT FROM f.event_time""",
        )[0][0]
        == 0
    )
    assert reports["defects"].counts["time_null_order_missing"] == nulls


def test_order_lead_time_and_on_time(derived, workbook_frames):
    warehouse, reports, _, _, _ = derived
    orders = workbook_frames["OrdensFabrico"]
    finished = orders.dropna(subset=["Of_DataAcabamento"])
    ordered = finished[finished.Of_DataAcabamento >= finished.Of_DataCriacao]
    assert reports["orders"].counts["lead_time_set"] == len(ordered)
    with_due = finished.dropna(subset=["Of_DataTransporte"])
    on_time = (with_due.Of_DataAcabamento < with_due.Of_DataTransporte.dt.normalize() + pd.Timedelta(days=1)).sum()
    assert query(warehouse, "SELECT count(*) FILTER (WHERE is_on_time), count(is_on_time) FROM core.ordens_fabrico")[
        0
    ] == (on_time, len(with_due))


def test_issue_counts_equal_counts_computed_independently(derived, workbook_frames):
    """pandas over the workbook (another reader, no SQL): every reference of the contract and
    the two impossible date orders, counted over the rows that reach core."""
    _, _, issues, _, _ = derived
    frames = {s.name: core_rows(workbook_frames[s.name], s) for s in SHEETS}
    expected = {}
    for s in SHEETS:
        for column in s.columns:
            if column.references:
                parent, header = column.references.split(".")
                values = frames[s.name][column.header]
                known = set(frames[parent][header])
                expected[f"orphan:{s.name}.{column.header}"] = int((values.notna() & ~values.isin(known)).sum())
            if column.type is ColumnType.TIMESTAMP:  # outside 1990..2100, counted by pandas
                times = pd.to_datetime(frames[s.name][column.header].replace("NULL", None), errors="coerce")
                outside = times.notna() & ((times < pd.Timestamp(1990, 1, 1)) | (times >= pd.Timestamp(2100, 1, 1)))
                expected[f"implausible_timestamp:{s.name}.{column.header}"] = int(outside.sum())
    orders, phases = frames["OrdensFabrico"], frames["FasesOrdemFabrico"]
    expected["order_finished_before_created"] = int((orders.Of_DataAcabamento < orders.Of_DataCriacao).sum())
    expected["phase_ends_before_start"] = int((phases.FaseOf_Fim < phases.FaseOf_Inicio).sum())
    assert issues == expected
    assert issues["orphan:FuncionariosFaseOrdemFabrico.FuncionarioFaseOf_FuncionarioId"] > 0
    assert issues["orphan:OrdensFabrico.Of_ProdutoId"] > 0 and issues["phase_ends_before_start"] > 0


def core_rows(frame: pd.DataFrame, s) -> pd.DataFrame:
    """The rows that reach core: exact copies collapsed, except in the keyless defects sheet."""
    return frame if s.key is None else frame.drop_duplicates()


def test_re_running_changes_nothing(derived):
    warehouse, _, issues, gates, _ = derived
    snapshot = "SELECT issue_code, record_key, detail FROM ops.data_quality_issues ORDER BY 1, 2, 3"
    before = query(warehouse, snapshot)
    with warehouse.connect() as conn:
        assert backfill_phases(conn, full=True).rows_written == 0
        assert backfill_orders(conn).rows_written == 0
        assert backfill_defects(conn).rows_written == 0
        assert reconcile_orphans(conn) == issues
        assert [(g.numerator, g.denominator) for g in evaluate_gates(conn)] == [
            (g.numerator, g.denominator) for g in gates
        ]
    assert query(warehouse, snapshot) == before


def test_daily_aggregates_equal_pandas_over_the_core_rows(derived):
    """Three days (one with rework, one with phases ending before they start): the SQL
    aggregates against pandas over the same core rows; re-running a range changes nothing."""
    from datetime import timedelta

    from prodplan_pipeline.analytics.aggregates import PHASE_STATS, refresh, refresh_all

    warehouse = derived[0]
    rework_day, inverted_day = query(
        warehouse,
        """
        SELECT (SELECT event_time::date FROM core.fases_ordem_fabrico WHERE fase_of_retorno = 1
                ORDER BY fase_of_id LIMIT 1),
               (SELECT event_time::date FROM core.fases_ordem_fabrico WHERE fase_of_fim < fase_of_inicio
                ORDER BY fase_of_id LIMIT 1)""",
    )[0]
    days = sorted({rework_day, inverted_day, rework_day + timedelta(days=1)})
    with warehouse.connect() as conn:
        for day in days:
            refresh_all(conn, day, day + timedelta(days=1))
    phases = pd.DataFrame(
        query(
            warehouse,
            """
        SELECT f.event_time::date, o.of_produto_id, f.fase_of_fase_id, f.duration_seconds, f.fase_of_retorno
        FROM core.fases_ordem_fabrico f JOIN core.ordens_fabrico o ON o.of_id = f.fase_of_of_id
        WHERE f.event_time::date = ANY(%s)""",
            (days,),
        ),
        columns=["day", "produto", "fase", "duration", "retorno"],
    ).dropna(subset=["duration"])
    expected = (
        phases.groupby(["day", "produto", "fase"])
        .agg(
            n=("duration", "size"),
            total=("duration", "sum"),
            low=("duration", "min"),
            high=("duration", "max"),
            p50=("duration", "median"),
            p90=("duration", lambda d: d.quantile(0.9)),
            rework=("retorno", "sum"),
        )
        .reset_index()
    )
    actual = pd.DataFrame(
        query(
            warehouse,
            """
        SELECT snapshot_date, produto_id, fase_id, n, sum_duration_seconds, min_duration_seconds,
               max_duration_seconds, p50_duration_seconds, p90_duration_seconds, n_rework
        FROM analytics.agg_phase_stats_daily WHERE snapshot_date = ANY(%s)""",
            (days,),
        ),
        columns=expected.columns,
    )
    merged = expected.merge(actual, on=["day", "produto", "fase"], suffixes=("", "_sql"))
    assert len(merged) == len(expected) == len(actual) > 0
    for column in ("n", "total", "low", "high", "p50", "p90", "rework"):
        assert (merged[column] - merged[f"{column}_sql"]).abs().max() < 1e-6, column
    assert merged.rework.sum() > 0
    everything = "SELECT * FROM analytics.agg_phase_stats_daily ORDER BY 1, 2, 3"
    before = query(warehouse, everything)
    with warehouse.connect() as conn:
        for day in days:  # recomputed, equal: nothing is written
            report = refresh(conn, PHASE_STATS, day, day + timedelta(days=1))
            assert (report.rows_deleted, report.rows_written) == (0, 0) and report.rows > 0
    assert query(warehouse, everything) == before
    # Rows that differ from the recomputed ones, in every way: one changed (a NULL percentile
    # included, where "=" would not tell), one gone, one that has no group: exactly those written.
    changed, gone = before[0][:3], before[1][:3]
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE analytics.agg_phase_stats_daily SET n = n + 1, p90_duration_seconds = NULL "
            "WHERE (snapshot_date, produto_id, fase_id) = %s",
            (changed,),
        )
        cur.execute(
            "DELETE FROM analytics.agg_phase_stats_daily WHERE (snapshot_date, produto_id, fase_id) = %s", (gone,)
        )
        cur.execute(
            "INSERT INTO analytics.agg_phase_stats_daily SELECT snapshot_date, -1, fase_id, 1, 1, 1, 1, "
            "1, 1, 0 FROM analytics.agg_phase_stats_daily WHERE (snapshot_date, produto_id, fase_id) = %s",
            (changed,),
        )
        report = refresh(conn, PHASE_STATS, changed[0], changed[0] + timedelta(days=1))
    # deleted: the changed row and the stray one; written: the changed row, and the gone one if on that day
    assert (report.rows_deleted, report.rows_written) == ((2, 2) if gone[0] == changed[0] else (2, 1))
    with warehouse.connect() as conn:
        refresh(conn, PHASE_STATS, gone[0], gone[0] + timedelta(days=1))
    assert query(warehouse, everything) == before


def test_order_and_quality_aggregates_equal_pandas_over_the_core_rows(derived):
    from datetime import timedelta

    from prodplan_pipeline.analytics.aggregates import refresh_all

    warehouse = derived[0]
    (first,) = query(
        warehouse,
        "SELECT min(of_data_acabamento)::date FROM core.ordens_fabrico WHERE of_data_acabamento >= '2023-01-01'",
    )[0]
    days = [first + timedelta(days=n) for n in range(30)]
    with warehouse.connect() as conn:
        refresh_all(conn, days[0], days[-1] + timedelta(days=1))
    orders = pd.DataFrame(
        query(
            warehouse,
            """
        SELECT of_data_acabamento::date, of_produto_id, lead_time_seconds, is_on_time, of_data_transporte
        FROM core.ordens_fabrico WHERE of_data_acabamento::date = ANY(%s)""",
            (days,),
        ),
        columns=["day", "produto", "lead", "on_time", "due"],
    )
    expected = orders.groupby(["day", "produto"]).agg(
        n=("lead", "size"),
        total=("lead", "sum"),
        on_time=("on_time", lambda v: int((v == True).sum())),  # noqa: E712
        late=("on_time", lambda v: int((v == False).sum())),  # noqa: E712
        no_due=("due", lambda v: int(v.isna().sum())),
    )
    actual = pd.DataFrame(
        query(
            warehouse,
            """
        SELECT snapshot_date, produto_id, n, coalesce(sum_lead_time_seconds, 0), n_on_time, n_late, n_no_due_date
        FROM analytics.agg_order_stats_daily WHERE snapshot_date = ANY(%s)""",
            (days,),
        ),
        columns=["day", "produto", "n", "total", "on_time", "late", "no_due"],
    ).set_index(["day", "produto"])
    assert len(expected) > 5
    pd.testing.assert_frame_equal(expected.sort_index(), actual.sort_index(), check_dtype=False)

    defects = pd.DataFrame(
        query(
            warehouse,
            """
        SELECT e.ofch_event_time::date, o.of_produto_id, e.erro_fase_avaliacao, e.ofch_gravidade, e.erro_of_id
        FROM core.erros_ordem_fabrico e JOIN core.ordens_fabrico o ON o.of_id = e.erro_of_id
        WHERE e.ofch_event_time::date = ANY(%s)""",
            (days,),
        ),
        columns=["day", "produto", "fase", "gravidade", "of_id"],
    )
    expected = defects.groupby(["day", "produto", "fase", "gravidade"]).agg(
        n_defects=("of_id", "size"), n_orders=("of_id", "nunique")
    )
    actual = pd.DataFrame(
        query(
            warehouse,
            """
        SELECT snapshot_date, produto_id, fase_avaliacao_id, gravidade, n_defects, n_orders
        FROM analytics.agg_quality_daily WHERE snapshot_date = ANY(%s)""",
            (days,),
        ),
        columns=["day", "produto", "fase", "gravidade", "n_defects", "n_orders"],
    ).set_index(["day", "produto", "fase", "gravidade"])
    assert len(expected) > 5
    pd.testing.assert_frame_equal(expected.sort_index(), actual.sort_index(), check_dtype=False)


def test_only_issue_kinds_and_gates_whose_tables_changed_are_evaluated_again(derived):
    """An ingestion that changed only core.funcionarios (an employee removed): the issue kinds
    and gates that read it are looked for again and equal a full evaluation; every other kind
    keeps its rows as they were (its detected_at too) and every other gate its stored result.
    Rolled back: the module's warehouse stays as the fixture left it."""
    from prodplan_pipeline.derived.orphans import ISSUES, refresh_issues
    from prodplan_pipeline.quality.gates import GATES, refresh_gates

    warehouse, _, issues, gates, _ = derived
    rows = "SELECT issue_code, record_key, detail, detected_at FROM ops.data_quality_issues ORDER BY 1, 2"
    with warehouse.connect() as conn, conn.cursor() as cur:
        try:
            cur.execute("SELECT coalesce(max(run_id), 0) FROM ops.ingestion_runs")
            change = cur.fetchone()[0]
            assert refresh_issues(conn, change) == (issues, [i.code for i in ISSUES])  # none recorded yet
            assert sorted(refresh_gates(conn, change)[1]) == sorted(g.feature for g in GATES)
            assert refresh_issues(conn, change) == (issues, []) and refresh_gates(conn, change)[1] == []
            cur.execute(rows)
            before = cur.fetchall()
            cur.execute("""DELETE FROM core.funcionarios WHERE funcionario_id =
                           (SELECT funcionario_fase_of_funcionario_id FROM core.funcionarios_fase_ordem_fabrico
                            ORDER BY 1 LIMIT 1)""")
            cur.execute(
                "INSERT INTO ops.ingestion_runs (dagster_run_id, status, finished_at) "
                "VALUES (gen_random_uuid()::text, 'succeeded', now()) RETURNING run_id"
            )
            change = cur.fetchone()[0]
            cur.execute(
                "INSERT INTO ops.ingestion_sheet_runs (run_id, sheet, status, rows_inserted, rows_updated, "
                "rows_deleted, reconciled) VALUES (%s, 'Funcionarios', 'merged', 0, 0, 1, true)",
                (change,),
            )
            counts, looked_for = refresh_issues(conn, change)
            reading = {i.code for i in ISSUES if "core.funcionarios" in i.reads}
            assert set(looked_for) == reading and len(reading) >= 2
            cur.execute(rows)
            after = cur.fetchall()
            assert [r for r in after if r[0] not in reading] == [r for r in before if r[0] not in reading]
            grew = "orphan:FuncionariosFaseOrdemFabrico.FuncionarioFaseOf_FuncionarioId"
            assert counts[grew] > issues[grew]
            assert refresh_gates(conn, change)[1] == [g.feature for g in GATES if "core.funcionarios" in g.reads]
            assert counts == reconcile_orphans(conn)  # the full evaluation agrees
        finally:
            conn.rollback()
