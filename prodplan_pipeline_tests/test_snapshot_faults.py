"""The workbook is one snapshot: whatever is killed or lost on the way, the next plain run
converges to it. `prodplan ingest` processes (forked from the test's fork server, forked_cli: a
process each, without the interpreter's start) on real PostgreSQL, killed with SIGKILL (the
whole process group) at several points; the warehouse afterwards is compared, table by table,
with a clean ingest of the same workbook."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from prodplan_pipeline.contract import SHEETS
from prodplan_pipeline.warehouse import Warehouse
from prodplan_pipeline.warehouse.locks import INGESTION_LOCK, lock_holder_pid
from prodplan_pipeline.workbook.inspect import file_sha256
from prodplan_pipeline.workbook.sample import write_sample
from prodplan_pipeline_tests.cli_runs import Ingest, re_export, warehouse_of
from prodplan_pipeline_tests.conftest import RECENT_PARTITIONS, cli_environment, copied_environment, run_cli_forked
from prodplan_pipeline_tests.warehouse_fingerprint import differences, fingerprint
from prodplan_pipeline_tests.warehouse_queries import checksums, query
from prodplan_pipeline_tests.workbook_edit import edited


@pytest.fixture(scope="module")
def workbooks(tmp_path_factory) -> dict[str, Path]:
    """A first snapshot, and a second one that changes phases (a closed phase, moved ends),
    orders and defects, as a real re-export would."""
    folder = tmp_path_factory.mktemp("snapshots")
    first = folder / "first.xlsx"
    write_sample(first, scale=0.02, seed=5)
    second = edited(first, folder / "second.xlsx", re_export)
    return {"first": first, "second": second}


@pytest.fixture(scope="module")
def clean_runs(workbooks, databases, tmp_path_factory) -> dict[str, dict[str, str]]:
    """A clean first ingest of each workbook, each into a fresh warehouse: its environment
    (never written to again: the tests work on copies)."""
    envs = {}
    for name, workbook in workbooks.items():
        envs[name] = environment(databases, tmp_path_factory.mktemp(f"clean-{name}"))
        assert run_cli_forked(["ingest", "--workbook", str(workbook)], envs[name]).returncode == 0
    return envs


@pytest.fixture(scope="module")
def clean(clean_runs) -> dict[str, dict[str, str]]:
    """The fingerprint of each clean ingest."""
    return {name: fingerprint(warehouse_of(env)) for name, env in clean_runs.items()}


@pytest.fixture
def first_ingested(clean_runs, clean, databases, tmp_path) -> dict[str, str]:
    """An environment as a plain first ingest of the first workbook leaves it (a copy of the
    clean one: the same databases and home, without ingesting again), PRODPLAN_HOME at tmp_path."""
    env = copied_environment(databases, clean_runs["first"], tmp_path)
    assert differences(fingerprint(warehouse_of(env)), clean["first"]) == []
    return env


def environment(databases, home: Path) -> dict[str, str]:
    return cli_environment(databases, home, "faults", PRODPLAN_PARTITIONS_START=RECENT_PARTITIONS)


def wait_until_idle(warehouse: Warehouse) -> None:
    """A killed client's backend finishes (rolls back) its statement on its own time."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not query(
            warehouse,
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state <> 'idle'",
        ):
            return
        time.sleep(0.1)


# Progress lines at which a kill lands, and what the killed run is then: killed while staging
# (its ingestion run never finished), just after the snapshot's commit, while its derived values
# are verified, or in the quality run beside the analytics after its first table's expectations
# (the ingestion run finished, a Dagster run did not), at the start of the set-based analytics
# refresh (both runs finished; only the analytics layers lag). Each point leaves work for the
# rerun, which must not find the snapshot already reflected; a line the quality run prints last
# (a gate, the issues) may come after everything else is done, so none is a point. The Dagster
# runs' statuses: each set is one the kill may leave, as the rerun records it; at "analytics:"
# the quality run beside the refresh may have been created when the kill lands, or not yet.
SUCCESS, INTERRUPTED = frozenset({"SUCCESS"}), frozenset({"FAILURE", "SUCCESS"})
FIRST_LOAD_POINTS = {
    "rows, 0 rejected": (["interrupted", "succeeded"], {INTERRUPTED}),
    "merged into core.fases_ordem_fabrico": (["succeeded", "succeeded"], {INTERRUPTED}),
    "rows written (": (["succeeded", "succeeded"], {INTERRUPTED}),  # derived values, in the snapshot's run
    "expectations met": (["succeeded", "succeeded"], {INTERRUPTED}),  # in the run beside the analytics
    "analytics:": (["succeeded", "succeeded"], {SUCCESS, INTERRUPTED}),
}


@pytest.mark.parametrize("point", FIRST_LOAD_POINTS)
def test_a_first_ingest_killed_anywhere_converges_on_the_plain_rerun(point, workbooks, clean, databases, tmp_path):
    env = environment(databases, tmp_path)
    victim = Ingest(env, workbooks["first"])
    assert victim.wait_for(point), "".join(victim.lines)
    if point == "analytics:":  # the lock covers the analytics layers too
        with warehouse_of(env).connect() as conn:
            assert lock_holder_pid(conn, INGESTION_LOCK) is not None
    victim.kill()
    wait_until_idle(warehouse_of(env))
    rerun = run_cli_forked(["ingest", "--workbook", str(workbooks["first"])], env)
    assert rerun.returncode == 0, rerun.stderr
    assert differences(fingerprint(warehouse_of(env)), clean["first"]) == []
    runs, dagster_runs = FIRST_LOAD_POINTS[point]
    assert [s for (s,) in query(warehouse_of(env), "SELECT status FROM ops.ingestion_runs ORDER BY run_id")] == runs
    statuses = frozenset(dagster_statuses(env))
    assert statuses in dagster_runs, "no Dagster run is left started: the rerun closed what the kill left"
    if "FAILURE" in statuses:
        assert "was interrupted" in rerun.stderr, "the rerun says, in one line, what it closed"


def dagster_statuses(env: dict[str, str]) -> set[str]:
    dagster = Warehouse(make_url(env["PRODPLAN_DATABASE_URL"]).set(database=env["PRODPLAN_DAGSTER_DATABASE"]))
    return {s for (s,) in query(dagster, "SELECT DISTINCT status FROM runs")}


@pytest.mark.parametrize("point", ["merged into core.fases_ordem_fabrico", "analytics:"])
def test_a_re_ingest_killed_after_its_commit_converges_to_the_new_snapshot(point, workbooks, clean, first_ingested):
    env = first_ingested
    victim = Ingest(env, workbooks["second"])
    assert victim.wait_for(point), "".join(victim.lines)
    victim.kill()
    wait_until_idle(warehouse_of(env))
    # Committed rows are whole: new source columns always come with their derived values.
    assert (
        query(
            warehouse_of(env),
            """SELECT count(*) FROM core.fases_ordem_fabrico
        WHERE is_open IS NULL OR is_open <> (fase_of_fim IS NULL)
           OR duration_seconds IS DISTINCT FROM CASE WHEN fase_of_fim >= fase_of_inicio
              THEN extract(epoch FROM fase_of_fim - fase_of_inicio)::double precision END""",
        )[0][0]
        == 0
    )
    assert run_cli_forked(["ingest", "--workbook", str(workbooks["second"])], env).returncode == 0
    assert differences(fingerprint(warehouse_of(env)), clean["second"]) == []


def test_staging_emptied_by_crash_recovery_does_not_fail_an_unchanged_ingest(workbooks, clean, first_ingested):
    env = first_ingested
    with warehouse_of(env).connect() as conn, conn.cursor() as cur:  # what crash recovery does
        cur.execute("TRUNCATE " + ", ".join(s.staging_table for s in SHEETS))
    again = run_cli_forked(["ingest", "--workbook", str(workbooks["first"])], env)
    assert again.returncode == 0, again.stderr
    assert differences(fingerprint(warehouse_of(env)), clean["first"]) == []
    # a layer left behind (its refresh killed before it committed) is caught up by a plain run
    with warehouse_of(env).connect() as conn, conn.cursor() as cur:
        cur.execute("UPDATE ops.watermarks SET value = '0' WHERE name = 'analytics.materialized_views'")
    assert query(warehouse_of(env), "SELECT aggregates_catching_up FROM ops.snapshot_labels")[0][0]
    caught_up = run_cli_forked(["ingest", "--workbook", str(workbooks["first"])], env)
    assert caught_up.returncode == 0 and "analytics: current layers and views" in caught_up.stderr
    assert not query(warehouse_of(env), "SELECT aggregates_catching_up FROM ops.snapshot_labels")[0][0]
    # and a changed workbook after it still merges from a fresh read
    assert run_cli_forked(["ingest", "--workbook", str(workbooks["second"])], env).returncode == 0
    assert differences(fingerprint(warehouse_of(env)), clean["second"]) == []


def test_a_half_broken_snapshot_changes_no_core_table_until_allowed(workbooks, first_ingested, databases, tmp_path):
    env = first_ingested
    before = checksums(warehouse_of(env))

    def new_orders_and_half_the_phases(book):
        re_export(book)  # orders and defects changed ...
        phases = book["FasesOrdemFabrico"]
        phases.delete_rows(2, (phases.max_row - 1) // 2)  # ... and half the phases lost

    broken = edited(workbooks["first"], tmp_path / "broken.xlsx", new_orders_and_half_the_phases)
    refused = run_cli_forked(["ingest", "--workbook", str(broken)], env)
    assert refused.returncode == 2, refused.stderr
    assert checksums(warehouse_of(env)) == before, "no core table changed"
    report = (tmp_path / "reports" / "CRITICAL_MISMATCHES.md").read_text()
    assert "--max-shrink 0.5" in report and "PRODPLAN_MAX_SHRINK" in report
    assert "not committed: sheet FasesOrdemFabrico" in report, "the other sheets say why they did not land"
    landed = run_cli_forked(["ingest", "--workbook", str(broken), "--max-shrink", "0.6"], env)
    assert landed.returncode == 0, landed.stderr
    assert checksums(warehouse_of(env)) != before
    clean_env = environment(databases, tmp_path / "reference")
    assert run_cli_forked(["ingest", "--workbook", str(broken)], clean_env).returncode == 0
    assert differences(fingerprint(warehouse_of(env)), fingerprint(warehouse_of(clean_env))) == []


def test_a_bad_max_shrink_is_refused_in_one_sentence(workbooks, databases, tmp_path):
    env = environment(databases, tmp_path)
    result = run_cli_forked(["ingest", "--workbook", str(workbooks["first"]), "--max-shrink", "half"], env)
    assert result.returncode == 1 and "--max-shrink must be a fraction between 0 and 1" in result.stderr
    result = run_cli_forked(["ingest", "--workbook", str(workbooks["first"])], {**env, "PRODPLAN_MAX_SHRINK": "2"})
    assert result.returncode == 1 and "PRODPLAN_MAX_SHRINK must be a fraction" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_workbook_renamed_over_mid_read_never_mixes_two_files(workbooks, clean, databases, tmp_path):
    env = environment(databases, tmp_path)
    path = tmp_path / "Folha_IA.xlsx"
    path.write_bytes(workbooks["first"].read_bytes())
    replacement = tmp_path / "incoming.xlsx"
    replacement.write_bytes(workbooks["second"].read_bytes())
    ingest = Ingest(env, path)
    assert ingest.wait_for("workbook Folha_IA.xlsx:"), "".join(ingest.lines)
    os.replace(replacement, path)  # the ERP drops a new export while the sheets are being read
    assert ingest.process.wait(timeout=300) == 0, "".join(ingest.lines)
    warehouse = warehouse_of(env)
    assert differences(fingerprint(warehouse), clean["first"]) == [], "every sheet came from the first file"
    assert query(warehouse, "SELECT workbook_sha256 FROM ops.ingestion_runs")[0][0] == file_sha256(workbooks["first"])
    assert run_cli_forked(["ingest", "--workbook", str(path)], env).returncode == 0  # the new export, whole
    assert differences(fingerprint(warehouse), clean["second"]) == []
    copies = sorted(p.name for p in (tmp_path / "exports").glob("*.xlsx"))
    assert copies == sorted(f"{file_sha256(w)}.xlsx" for w in workbooks.values()), "an audit trail"
