"""Ingestion benchmark (issue 13): whole `prodplan ingest` commands as ratios to a floor measured in
the same run, so the figures compare across machines and across a machine's drift.

    python bench/ingest.py --scale 1            # the real size, ~1.07 M rows
    python bench/ingest.py --scale 0.1 --skip-baseline --verbose

The floor is the least any ingest must do: every sheet read by fastexcel (untyped) and COPYed as
CSV into bare UNLOGGED text tables, one thread, no checks. It is measured before and after the
ingests and the smaller kept. Then three whole commands run as subprocesses (wall seconds and
peak RSS, measured by a small launcher process) on one warehouse: a first ingest into an empty warehouse, an unchanged
re-ingest of the same file, and a copy with 1% of the phase rows changed (see
workbooks.change_phase_mix). The ingestion window is finished_at - started_at of the ingestion
run in ops.ingestion_runs (finished_at is the commit's clock time); beside it, as a cross-check,
the window to the end of the snapshot step in Dagster's event log.

Options: --skip-baseline skips the naive pandas + openpyxl + to_sql baseline (minutes at scale 1);
--data-path also times ingest_workbook alone (no Dagster, no analytics); --verbose prints each
command's progress lines.

Uses PRODPLAN_DATABASE_URL's server when set, else the embedded server; every run works in fresh
databases (bench_*_<hex>) and a fresh PRODPLAN_HOME, dropped and removed at the end, also on
failure. Prints figures; asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workbooks import OUT, PHASES, change_phase_mix, phase_differences, sample_workbook  # noqa: E402

from prodplan_pipeline.settings import Settings  # noqa: E402
from prodplan_pipeline.textui import format_table  # noqa: E402
from prodplan_pipeline.warehouse import Warehouse  # noqa: E402
from prodplan_pipeline.warehouse.connection import ensure_database, libpq_dsn, server_url  # noqa: E402

TARGETS = {"window": 1.5, "first": 4.0, "unchanged": 0.6, "changed": 2.5}  # x floor, issue 13
MAX_RSS_MB = 1024
STDERR_TAIL = 40  # lines of a failed command's stderr worth reading


@dataclass
class Command:
    """One whole `prodplan ingest` run: what the benchmark reads of it."""

    label: str
    seconds: float
    rss_mb: float
    outcome: dict  # the --json summary

    def sheet(self, name: str) -> dict:
        return next(s for s in self.outcome["sheets"] if s["sheet"] == name)


def drop_database(server, database: str) -> None:
    import psycopg2

    admin = psycopg2.connect(libpq_dsn(server.set(database="postgres")))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    admin.close()


# For the other benchmarks (api.py, analytics.py): one migrated scratch warehouse each.
def scratch_warehouse(purpose: str) -> Warehouse:
    url = server_url(Settings.from_env()).set(database=f"bench_{purpose}_{uuid.uuid4().hex[:6]}")
    ensure_database(url)
    warehouse = Warehouse(url)
    warehouse.migrate()
    return warehouse


def drop(warehouse: Warehouse) -> None:
    drop_database(warehouse.url, warehouse.url.database)  # WITH (FORCE): its sessions too


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Scratch:
    """The databases and the PRODPLAN_HOME this run creates; ``close`` drops and removes them all."""

    def __init__(self):
        self.server = server_url(Settings.from_env())  # starts the embedded server when no URL is set
        self.databases: list[str] = []
        self.home = Path(tempfile.mkdtemp(prefix="bench_ingest_home_"))

    def name(self, purpose: str) -> str:
        """A fresh database name, dropped at the end (whoever creates the database)."""
        self.databases.append(f"bench_{purpose}_{uuid.uuid4().hex[:8]}")
        return self.databases[-1]

    def database(self, purpose: str):
        url = self.server.set(database=self.name(purpose))
        ensure_database(url)
        return url

    def drop(self, database: str) -> None:
        drop_database(self.server, database)

    def close(self) -> None:
        for database in self.databases:
            try:
                self.drop(database)
            except Exception as error:  # noqa: BLE001 - drop the others; say which one stays
                print(f"could not drop scratch database {database}: {error}", file=sys.stderr)
        shutil.rmtree(self.home, ignore_errors=True)


# --- the floor ------------------------------------------------------------------------------


def floor_seconds(path: Path, scratch: Scratch) -> float:
    """Read every sheet untyped, write it as CSV, COPY it into text columns: one thread, in order."""
    import fastexcel
    import psycopg2
    import pyarrow.csv as pacsv

    url = scratch.database("floor")
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        started = time.perf_counter()
        with warnings.catch_warnings(), conn.cursor() as cur:
            warnings.simplefilter("ignore")  # fastexcel's notes on cells it cannot type
            reader = fastexcel.read_excel(str(path))  # opened once, as any reader of every sheet would
            for number, name in enumerate(reader.sheet_names):
                table = reader.load_sheet(name).to_arrow()
                buffer = io.BytesIO()
                pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
                buffer.seek(0)
                columns = ", ".join(f"c{i} text" for i in range(table.num_columns))
                cur.execute(f"CREATE UNLOGGED TABLE sheet{number} ({columns})")
                cur.copy_expert(f"COPY sheet{number} FROM STDIN WITH (FORMAT csv)", buffer)
        conn.commit()
        return time.perf_counter() - started
    finally:
        conn.close()
        scratch.drop(url.database)  # now: the ingests should not share the server with it


# --- whole commands -------------------------------------------------------------------------


def child_environment(scratch: Scratch) -> tuple[dict[str, str], Warehouse]:
    """The caller's environment without its PRODPLAN_* and DAGSTER_* settings, pointed at a
    scratch warehouse, a scratch Dagster storage on the same server and a fresh home."""
    warehouse = Warehouse(scratch.database("ingest"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRODPLAN_", "DAGSTER_"))}
    env.update(
        PRODPLAN_DATABASE_URL=libpq_dsn(warehouse.url),
        PRODPLAN_DAGSTER_DATABASE=scratch.name("dagster"),
        PRODPLAN_HOME=str(scratch.home),
    )
    return env, warehouse


# A small process between the benchmark and the command: Linux counts in a child's peak RSS the
# pages of the parent it was forked from (this process holds workbooks by then), so the command
# is forked from this launcher, which reports the command's own peak RSS and wall time.
LAUNCHER = """import json, resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.call(sys.argv[2:])
seconds = time.perf_counter() - started
with open(sys.argv[1], "w") as report:
    json.dump({"seconds": seconds, "rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, report)
sys.exit(code)"""


def run_ingest(label: str, workbook: Path, env: dict[str, str], home: Path, verbose: bool) -> Command:
    """`prodplan ingest --json` as a child: wall seconds, peak RSS, the JSON summary."""
    out, err, usage = home / f"{label}.stdout", home / f"{label}.stderr", home / f"{label}.usage"
    command = [
        sys.executable,
        "-c",
        LAUNCHER,
        str(usage),
        sys.executable,
        "-m",
        "prodplan_pipeline.cli",
        "ingest",
        "--workbook",
        str(workbook),
        "--json",
    ]
    with out.open("w") as stdout, err.open("w") as stderr:
        returncode = subprocess.call(command, stdout=stdout, stderr=stderr, env=env)
    measured = json.loads(usage.read_text())
    progress = err.read_text()
    if verbose:
        print("\n".join(f"    {line}" for line in progress.splitlines()), flush=True)
    outcome = _summary(out.read_text())
    if returncode != 0 or outcome is None or outcome["exit_code"] != 0:
        tail = "\n".join(progress.splitlines()[-STDERR_TAIL:])
        raise SystemExit(
            f"{label}: `prodplan ingest` exited {returncode} "
            f"(summary: {outcome and outcome.get('error')}); its stderr ends:\n{tail}"
        )
    return Command(label, measured["seconds"], measured["rss_kb"] / 1024, outcome)  # KB on Linux


def _summary(stdout: str) -> dict | None:
    """The JSON summary: stdout's last line (the tables printed before it are for people)."""
    lines = stdout.strip().splitlines()
    try:
        return json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        return None


def ingestion_window(warehouse: Warehouse, run_id: int) -> float:
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT extract(epoch FROM finished_at - started_at) FROM ops.ingestion_runs WHERE run_id = %s", (run_id,)
        )
        return float(cur.fetchone()[0])


COMMIT_STEP_END = """SELECT max(timestamp) FROM event_logs
                     WHERE run_id = %s AND step_key = 'snapshot' AND dagster_event_type = 'STEP_SUCCESS'"""


def window_to_commit_end(warehouse: Warehouse, dagster_url, command: Command) -> float | None:
    """started_at to the end of the snapshot step (merge, derived values, count checks, commit)
    in Dagster's event log. A cross-check of finished_at, which the commit's transaction sets
    with now(): the transaction's start, before any merge."""
    import psycopg2

    conn = psycopg2.connect(libpq_dsn(dagster_url))
    try:
        with conn.cursor() as cur:
            cur.execute(COMMIT_STEP_END, (command.outcome["dagster_run_id"],))
            ended = cur.fetchone()[0]  # naive UTC, as Dagster stores it
    finally:
        conn.close()
    with warehouse.connect() as wconn, wconn.cursor() as cur:
        cur.execute(
            "SELECT started_at AT TIME ZONE 'UTC' FROM ops.ingestion_runs WHERE run_id = %s",
            (command.outcome["ingestion_run_id"],),
        )
        started = cur.fetchone()[0]
    return (ended - started).total_seconds() if ended else None


def report(command: Command, window: float | None = None) -> None:
    run = command.outcome["ingestion_run_id"]
    line = f"{command.label}: {command.seconds:.2f} s, peak RSS {command.rss_mb:.0f} MB"
    if command.outcome.get("unchanged"):  # the CLI recognised the snapshot: no run, no sheets
        print(f"{line}; workbook recognised as the snapshot of ingestion run {run}, nothing ingested")
        return
    phases = command.sheet(PHASES)
    skipped = sum(s["status"] == "skipped_unchanged" for s in command.outcome["sheets"])
    print(
        f"{line}, ingestion run {run}"
        + (f", window {window:.2f} s" if window is not None else "")
        + f"; {skipped}/{len(command.outcome['sheets'])} sheets skipped unchanged; phases: "
        f"{phases['rows_inserted']:,} inserted, {phases['rows_updated']:,} updated, "
        f"{phases['rows_unchanged']:,} unchanged, {phases['rows_deleted']:,} deleted",
        flush=True,
    )


# --- the 1% change ---------------------------------------------------------------------------


def changed_workbook(path: Path) -> tuple[Path, dict[str, int]]:
    """The 1% copy, checked by reading it back: what differs must be what was meant to."""
    target = OUT / f"{path.stem}_mix1pct.xlsx"
    started = time.perf_counter()
    meant = change_phase_mix(path, target, share=0.01)
    found = phase_differences(path, target)
    print(f"1% workbook {target.name}: {meant} in {time.perf_counter() - started:.1f} s; read back: {found}")
    expected = {
        **meant,
        "rows changed": meant["weight"] + meant["moved"] + meant["closed"],
        "appended ids new": meant["appended"],
    }
    if any(found[kind] != count for kind, count in expected.items()):
        raise SystemExit("the 1% workbook does not read back as written (see the counts above)")
    return target, meant


def check_changes(command: Command, meant: dict[str, int]) -> None:
    """Say so when the merge saw other changes than the workbook holds (not a timing: a fact)."""
    phases = command.sheet(PHASES)
    expected = {
        "rows_updated": meant["weight"] + meant["moved"] + meant["closed"],
        "rows_inserted": meant["appended"],
        "rows_deleted": 0,
    }
    for column, value in expected.items():
        if phases[column] != value:
            print(f"  NOTE: {PHASES} {column} = {phases[column]:,}, the workbook changed {value:,}")


# --- optional comparisons --------------------------------------------------------------------


def data_path_seconds(path: Path, scratch: Scratch) -> float:
    """ingest_workbook alone in this process: staging, merge and checks, no Dagster, no analytics."""
    from prodplan_pipeline.ingest.pipeline import ingest_workbook

    warehouse = Warehouse(scratch.database("datapath"))
    warehouse.migrate()
    started = time.perf_counter()
    ingest_workbook(warehouse, path)
    seconds = time.perf_counter() - started
    return seconds


def naive_baseline(path: Path, scratch: Scratch) -> float:
    """What the replaced system did: pandas + openpyxl for every sheet, then to_sql."""
    import pandas as pd
    import sqlalchemy as sa

    warehouse = Warehouse(scratch.database("baseline"))
    warehouse.migrate()
    engine = sa.create_engine(warehouse.url)
    try:
        started = time.perf_counter()
        frames = pd.read_excel(path, sheet_name=None, engine="openpyxl")
        read = time.perf_counter() - started
        for name, frame in frames.items():
            frame.to_sql(name.lower(), engine, schema="staging", if_exists="replace", index=False, chunksize=10_000)
        total = time.perf_counter() - started
        print(f"naive baseline: read {read:.1f} s, to_sql {total - read:.1f} s, total {total:.1f} s")
        return total
    finally:
        engine.dispose()


# --- the run ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--data-path", action="store_true", help="also time ingest_workbook alone")
    parser.add_argument("--verbose", action="store_true", help="print each command's progress lines")
    args = parser.parse_args()
    path = sample_workbook(args.scale, progress=lambda m: print(f"  sample: {m}", flush=True))
    print(f"workbook {path} ({path.stat().st_size / 1e6:.1f} MB)")
    changed_path, meant = changed_workbook(path)
    scratch = Scratch()
    try:
        return measure(args, path, changed_path, meant, scratch)
    finally:
        scratch.close()


def measure(args, path: Path, changed_path: Path, meant: dict[str, int], scratch: Scratch) -> int:
    before = floor_seconds(path, scratch)
    print(f"floor before the ingests: {before:.2f} s", flush=True)
    env, warehouse = child_environment(scratch)
    dagster_url = scratch.server.set(database=env["PRODPLAN_DAGSTER_DATABASE"])
    commands, windows, to_commit_end = {}, {}, {}
    for label, workbook in (("first", path), ("unchanged", path), ("changed", changed_path)):
        commands[label] = command = run_ingest(label, workbook, env, scratch.home, args.verbose)
        if not command.outcome.get("unchanged"):
            windows[label] = ingestion_window(warehouse, command.outcome["ingestion_run_id"])
            to_commit_end[label] = window_to_commit_end(warehouse, dagster_url, command)
        report(command, windows.get(label))
    check_changes(commands["changed"], meant)
    extra = {}
    if args.data_path:
        extra["data path only (ingest_workbook, first)"] = data_path_seconds(path, scratch)
    after = floor_seconds(path, scratch)
    print(f"floor after the ingests: {after:.2f} s", flush=True)
    floor = min(before, after)
    if not args.skip_baseline:
        extra["naive baseline (pandas + openpyxl + to_sql)"] = baseline = naive_baseline(path, scratch)
        print(
            f"naive baseline: {baseline / floor:.1f}x the floor, {baseline / commands['first'].seconds:.1f}x "
            "the whole first ingest"
        )
    print_table(floor, before, after, commands, windows, to_commit_end, extra)
    return 0


def print_table(
    floor: float,
    before: float,
    after: float,
    commands: dict[str, Command],
    windows: dict[str, float],
    to_commit_end: dict[str, float | None],
    extra: dict[str, float],
) -> None:
    def row(what: str, seconds: float | None, target: float | None = None):
        if seconds is None:  # a scenario the CLI answered without an ingestion run
            return (what, None, None, f"≤ {target:g}" if target else None)
        return (what, round(seconds, 2), round(seconds / floor, 2), f"≤ {target:g}" if target else None)

    rows = [
        row("floor (min of before/after)", floor),
        row("  floor before the ingests", before),
        row("  floor after the ingests", after),
        row("ingestion window, first ingest", windows.get("first"), TARGETS["window"]),
        row("  to the commit's end (Dagster)", to_commit_end.get("first"), TARGETS["window"]),
        row("whole first ingest", commands["first"].seconds, TARGETS["first"]),
        row("unchanged re-ingest", commands["unchanged"].seconds, TARGETS["unchanged"]),
        row("1% change, whole command", commands["changed"].seconds, TARGETS["changed"]),
        row("1% change, ingestion window", windows.get("changed")),
        row("  to the commit's end (Dagster)", to_commit_end.get("changed")),
    ]
    rows += [row(what, seconds) for what, seconds in extra.items()]
    rows += [
        (f"peak RSS, {label} (MB, not s)", round(c.rss_mb), None, f"≤ {MAX_RSS_MB} MB") for label, c in commands.items()
    ]
    print()
    print(format_table(["what", "seconds", "× floor", "target"], rows))


if __name__ == "__main__":
    sys.exit(main())
