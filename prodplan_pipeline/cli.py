"""prodplan: the command line of ProdPlan (the Folha_IA workbook -> PostgreSQL, by Dagster).

Every error ends with one paragraph on stderr and exit status 1, never a traceback. Input problems
(a bad URL, an unreachable server, a bad option or PRODPLAN_* value, a path that cannot be used)
and a database lost in the middle of a command say what to fix. Anything else is unexpected (a bug
or an environment problem): the paragraph says so and names the log file, under
$PRODPLAN_HOME/logs, that holds its full traceback.
"""

# Deferred imports: each command imports what it needs when it runs, so `prodplan status`, `env`
# or a refusal never pays for Dagster, Great Expectations or pandas (1-4 s of imports).

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from prodplan_pipeline.settings import SettingError, Settings, home_as_given
from prodplan_pipeline.textui import Progress, format_table

EXIT_OK, EXIT_ERROR = 0, 1
# An OSError with one of these says something about the machine, not the code, whatever the path:
# the fix (permissions, a read-only or full disk, a quota) is outside ProdPlan.
ENVIRONMENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})
# These say that a path is wrong: the user's to fix when it is a path the user chose.
PATH_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.ENAMETOOLONG})
MAX_DETAIL = 400  # characters of an unexpected error's message on the terminal; the log has all
UI_HOST = "127.0.0.1"
# dagster dev stops its webserver and daemon in a few seconds (it allows each 60 s itself); a group
# still running this long after the first SIGINT/SIGTERM is killed.
UI_STOP_GRACE = 30.0
# SIGHUP too: a closed terminal no longer reaches dagster dev, which runs in a session of its own.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class UserError(Exception):
    """A problem the user can fix; shown as a message, not a traceback."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("prodplan: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error ends in one paragraph; bugs get a log
        try:
            message = _lost_database(exc) or _user_message(exc, args)
        except Exception:  # noqa: BLE001 - classifying must never hide the error it classifies
            message = None
        print(f"prodplan {args.command}: {message or _unexpected(exc, args.command, argv)}", file=sys.stderr)
        return EXIT_ERROR


def _lost_database(exc: Exception) -> str | None:
    """The paragraph for a database lost or unreachable mid-command (not a bug: nothing to trace)."""
    from prodplan_pipeline.warehouse.lost import database_lost_message

    try:
        settings = Settings.from_env()
    except SettingError:  # a bad PRODPLAN_* value: name no server rather than fail again here
        settings = None
    return database_lost_message(exc, settings)


def _user_message(exc: Exception, args: argparse.Namespace) -> str | None:
    """The message of an error the user (or the machine's owner) can fix, else None. A bare
    ValueError, KeyError ... is not one: the code raises its own classes for bad input."""
    from prodplan_pipeline.warehouse.connection import DatabaseConfigError
    from prodplan_pipeline.warehouse.migrations import MigrationError
    from prodplan_pipeline.workbook.inspect import WorkbookError

    if isinstance(exc, (UserError, SettingError, DatabaseConfigError, MigrationError, WorkbookError)):
        return str(exc)
    if isinstance(exc, OSError):
        return _environment_message(exc, args)
    return None


def _environment_message(exc: OSError, args: argparse.Namespace) -> str | None:
    """One paragraph naming the path for an OSError about the machine (permissions, disk) or
    about a path the user chose; None for one that looks like a bug."""
    from prodplan_pipeline.workbook.inspect import describe_path_error

    if exc.errno is None:  # not from the OS: our own sentence (paths.project_root) or a library's
        return str(exc) if _raised_in_prodplan(exc) else None
    if exc.filename is None or isinstance(exc.filename, int):
        return None
    path = Path(os.fsdecode(exc.filename))
    owner = next((name for root, name in _user_locations(args) if _within(path, root)), None)
    if exc.errno not in ENVIRONMENT_ERRNOS and not (exc.errno in PATH_ERRNOS and owner):
        return None
    problem = describe_path_error(path, exc, "used")
    if exc.errno == errno.ENOSPC:
        return f"{problem}; free some space on that disk, then re-run the command."
    if owner:
        return f"{problem}. It is under {owner}; fix that path or its permissions, or choose another."
    return f"{problem}; fix its permissions (or the disk), then re-run the command."


def _user_locations(args: argparse.Namespace) -> list[tuple[Path, str]]:
    """The paths the user chose (options, PRODPLAN_* variables), most specific first."""
    chosen = []
    if getattr(args, "workbook", None):
        chosen.append((args.workbook, f"--workbook {args.workbook}"))
    if getattr(args, "out", None):  # write_sample writes a temporary file beside it
        chosen.append((args.out.parent, f"the folder of --out {args.out}"))
    try:
        settings = Settings.from_env()
    except SettingError:
        return chosen
    if settings.workbook:
        chosen.append((settings.workbook, f"PRODPLAN_WORKBOOK ({settings.workbook})"))
    if settings.reports_dir:
        chosen.append((settings.reports_dir, f"PRODPLAN_REPORTS_DIR ({settings.reports_dir})"))
    return [
        *chosen,
        (settings.home, f"PRODPLAN_HOME ({settings.home}), which must be a folder this user can create and write in"),
    ]


def _within(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root`` or inside it, spelled with or without its links resolved."""
    for inner in {os.path.abspath(path), os.path.realpath(path)}:
        for outer in {os.path.abspath(root), os.path.realpath(root)}:
            if inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep):
                return True
    return False


def _raised_in_prodplan(exc: BaseException) -> bool:
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    package = os.path.dirname(os.path.abspath(__file__))
    return frame is not None and os.path.abspath(frame.tb_frame.f_code.co_filename).startswith(package + os.sep)


def _unexpected(exc: Exception, command: str, argv: list[str]) -> str:
    """The paragraph for a bug or an environment problem; its traceback goes to a log file."""
    detail = " ".join(f"{type(exc).__name__}: {exc}".split())
    if len(detail) > MAX_DETAIL:
        detail = detail[:MAX_DETAIL] + " ..."
    log = _write_log(exc, command, argv)
    where = (
        f"Its full traceback is in {log}; please attach that file when reporting it."
        if log
        else "No log file could be written (see the traceback below)."
    )
    message = (
        f"unexpected error, {detail}. This is a bug in ProdPlan or a problem with its "
        f"environment, not with your input. {where}"
    )
    if log is None:  # the traceback is the only record left: better on the terminal than lost
        message += "\n" + "".join(traceback.format_exception(exc))
    return message


def _write_log(exc: Exception, command: str, argv: list[str]) -> Path | None:
    """Write the traceback under $PRODPLAN_HOME/logs (else the temp folder); the file's path."""
    home = home_as_given()
    name = f"prodplan-{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    text = (
        f"prodplan {shlex.join(argv)}\n{time.strftime('%Y-%m-%d %H:%M:%S %z')}, "
        f"Python {sys.version.split()[0]}, pid {os.getpid()}\n\n" + "".join(traceback.format_exception(exc))
    )
    for folder in (home / "logs", Path(tempfile.gettempdir()) / "prodplan-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text, encoding="utf-8")
        except OSError:
            continue
        return folder / name
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prodplan", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sample = commands.add_parser("sample", help="write a synthetic Folha_IA workbook")
    sample.add_argument("--out", required=True, type=Path, help="where to write the .xlsx")
    sample.add_argument("--scale", type=float, default=1.0, help="1 = the real size, ~1.1 M rows")
    sample.add_argument("--seed", type=int, default=7, help="same seed, same bytes")
    sample.add_argument(
        "--employee-link-match",
        type=float,
        default=None,
        metavar="RATE",
        help="share of employee-link phase ids that exist (default: the real 0.323)",
    )
    sample.set_defaults(handler=cmd_sample)

    ingest = commands.add_parser(
        "ingest",
        help="ingest a workbook: staging, validation, merge, checks",
        description="Ingest a workbook: staging, validation, merge, checks. Exit status 0: every "
        "blocking check passed and every analytics layer reflects the snapshot; 2: a "
        "count check failed or a sheet was refused (CRITICAL_MISMATCHES.md written, "
        "no core table changed); 1: any other error.",
    )
    ingest.add_argument(
        "--plant", default=None, help="the declared plant whose workbook to ingest (default: the default plant)"
    )
    ingest.add_argument(
        "--workbook", type=Path, help="default: the plant's declared workbook (PRODPLAN_WORKBOOK or the sample)"
    )
    ingest.add_argument("--json", action="store_true", help="end stdout with one JSON summary")
    ingest.add_argument("--force", action="store_true", help="re-read and re-merge sheets whose content is unchanged")
    _add_max_shrink(ingest)
    ingest.set_defaults(handler=cmd_ingest)

    demo = commands.add_parser(
        "demo",
        help="sample workbook + embedded database + full ingestion",
        description="Writes a sample workbook once (under PRODPLAN_HOME/workbooks), ingests it "
        "through the Dagster graph, prints what happened to every row, then the "
        "commands to try next.",
    )
    demo.add_argument("--scale", type=float, default=0.1, help="size of the generated sample (1 = the real 1.1 M rows)")
    demo.add_argument("--json", action="store_true", help="end stdout with one JSON summary")
    _add_max_shrink(demo)
    demo.set_defaults(handler=cmd_demo, force=False)

    plants = commands.add_parser(
        "plants",
        help="declare the plants and list them",
        description="The plants ProdPlan serves, each an id and the workbook its ERP exports, declared in "
        "PRODPLAN_PLANTS (default $PRODPLAN_HOME/plants.yaml). With none declared, one plant, "
        "'default', whose workbook is PRODPLAN_WORKBOOK (else the sample).",
    )
    plant_commands = plants.add_subparsers(dest="plants_command", required=True, metavar="ACTION")
    add = plant_commands.add_parser(
        "add",
        help="declare a plant and its workbook",
        description="Declare a plant: an id (a lowercase letter, then lowercase letters, digits or hyphens; at most 32 "
        "characters) and the workbook its ERP exports. The first plant added declares 'default' too, "
        "with the workbook served so far. Adding a plant again with the same workbook changes nothing.",
    )
    add.add_argument("plant_id", metavar="ID", help="the plant's id, e.g. north")
    add.add_argument("--workbook", type=Path, required=True, help="the plant's Folha_IA.xlsx")
    add.add_argument("--json", action="store_true", help="one JSON document on stdout")
    add.set_defaults(handler=cmd_plants_add)
    listing = plant_commands.add_parser("list", help="the declared plants and their workbooks")
    listing.add_argument("--json", action="store_true", help="one JSON document on stdout")
    listing.set_defaults(handler=cmd_plants_list)

    status = commands.add_parser("status", help="schema, ingestion runs, gates, cache version")
    status.add_argument("--json", action="store_true", help="one JSON document on stdout")
    status.set_defaults(handler=cmd_status)

    ui = commands.add_parser(
        "ui",
        help="start the Dagster UI and daemon (dagster dev)",
        description="The Dagster UI and daemon (dagster dev) on 127.0.0.1, on ProdPlan's database "
        "and Dagster storage, so the runs of other prodplan commands show up there. A "
        "busy port is refused before anything starts. Ctrl-C (or SIGTERM, SIGHUP) "
        f"stops every Dagster process; any still running {UI_STOP_GRACE:g} s later "
        "is killed.",
    )
    ui.add_argument("--port", type=int, default=3000, help="port of the UI (default 3000)")
    ui.set_defaults(handler=cmd_ui)

    serve = commands.add_parser(
        "serve",
        help="the read API (KPIs, quality, orders) on 127.0.0.1",
        description="The read API (KPIs, quality, orders): FastAPI on uvicorn, with interactive "
        "docs at /docs that work without internet access.",
    )
    serve.add_argument("--port", type=int, default=8000, help="port of the API (default 8000)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)"
    )
    serve.add_argument("--workers", type=int, default=1, help="processes; with PRODPLAN_REDIS_URL they share one cache")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(handler=cmd_serve)

    env = commands.add_parser(
        "env",
        help="print the shell exports that point dagster at ProdPlan",
        description="Prints the shell exports that point plain dagster "
        'commands at ProdPlan\'s storage: eval "$(prodplan env)"',
    )
    env.set_defaults(handler=cmd_env)
    return parser


def _add_max_shrink(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--max-shrink",
        metavar="FRACTION",
        default=None,
        help="the largest share of a sheet's rows one snapshot may delete (default: PRODPLAN_MAX_SHRINK, else 0.20)",
    )


def _max_shrink(args: argparse.Namespace, settings: Settings) -> float:
    from prodplan_pipeline.settings import fraction

    if args.max_shrink is None:
        return settings.max_shrink
    return fraction("--max-shrink", args.max_shrink, settings.max_shrink)


def cmd_sample(args: argparse.Namespace) -> int:
    from prodplan_pipeline.workbook.inspect import check_output_path
    from prodplan_pipeline.workbook.sample import write_sample

    if args.out.suffix.lower() != ".xlsx":
        raise UserError(f"--out must name an .xlsx file, got {args.out}")
    _check_sample_options(args)
    check_output_path(args.out.expanduser().absolute())  # before minutes of generating rows
    progress = Progress()
    counts = write_sample(
        args.out, scale=args.scale, seed=args.seed, progress=progress, link_match_rate=args.employee_link_match
    )
    rows = [(sheet, n) for sheet, n in counts.items()]
    print(format_table(["sheet", "rows"], [*rows, ("total", sum(counts.values()))]))
    print(f"wrote {args.out} (scale {args.scale:g}, seed {args.seed}) in {progress.elapsed():.1f} s")
    return EXIT_OK


def _check_sample_options(args: argparse.Namespace) -> None:
    """The options write_sample refuses, as the user typed them (its own ValueError names its
    parameters, and would be a bug by the time it is raised)."""
    from prodplan_pipeline.workbook.sample import MAX_SCALE

    if not 0 < args.scale <= MAX_SCALE:  # also refuses nan
        raise UserError(
            f"--scale must be greater than 0 and at most {MAX_SCALE:g} (1 = the real export's size), got {args.scale:g}"
        )
    if getattr(args, "seed", 0) < 0:
        raise UserError(f"--seed must be zero or more, got {args.seed}")
    rate = getattr(args, "employee_link_match", None)
    if rate is not None and not 0 < rate <= 1:
        raise UserError(f"--employee-link-match must be greater than 0 and at most 1, got {rate:g}")


def cmd_ingest(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    # The plants are read for --plant, or for the workbook: --workbook alone needs no plants file.
    plant = None if args.plant is None and args.workbook else _ingested_plant(settings, args.plant)
    # Not resolved yet: a link loop or dangling link is named as the user gave it, by the check.
    workbook = (args.workbook or plant.workbook).expanduser().absolute()
    return _ingest(settings, workbook, args)


def _ingested_plant(settings: Settings, plant_id: str | None):
    """The plant `prodplan ingest` is for: ``--plant``, else the default plant."""
    from prodplan_pipeline.plants import DEFAULT_PLANT, PlantsError, find_plant

    plant = find_plant(settings, plant_id or DEFAULT_PLANT)
    if plant.id != DEFAULT_PLANT:
        # The warehouse's keys do not carry the plant yet: another plant's workbook would be
        # merged as the next snapshot of the default plant's data and replace it.
        raise PlantsError(
            f"plant {plant.id!r} is declared, but this warehouse does not keep plants apart yet (its keys "
            "do not include the plant); ingesting it would replace the default plant's snapshot, so "
            "nothing was read. Until then, ingest one plant per warehouse (PRODPLAN_DATABASE_URL)."
        )
    return plant


def cmd_plants_add(args: argparse.Namespace) -> int:
    from prodplan_pipeline.plants import DEFAULT_PLANT, add_plant

    settings = Settings.from_env()
    before = settings.plants_path.exists()
    plant, plants = add_plant(settings, args.plant_id, args.workbook)
    if args.json:
        print(json.dumps({"plant": _plant_json(plant), "plants": [_plant_json(p) for p in plants]}))
        return EXIT_OK
    print(f"plant {plant.id}: workbook {plant.workbook}, declared in {settings.plants_path}")
    if not before and plant.id != DEFAULT_PLANT and any(p.id == DEFAULT_PLANT for p in plants):
        default = next(p for p in plants if p.id == DEFAULT_PLANT)
        print(
            f"plant {DEFAULT_PLANT}: workbook {default.workbook}, declared too: the data served so far stays a plant's"
        )
    if not plant.workbook.exists():
        print(f"note: {plant.workbook} does not exist yet; its first ingestion waits for it", file=sys.stderr)
    return EXIT_OK


def cmd_plants_list(args: argparse.Namespace) -> int:
    from prodplan_pipeline.plants import declared_plants

    settings = Settings.from_env()
    plants = declared_plants(settings)
    if args.json:
        print(json.dumps({"file": str(settings.plants_path), "plants": [_plant_json(p) for p in plants]}))
        return EXIT_OK
    rows = [
        (p.id, str(p.workbook), f"{p.workbook.stat().st_size / 2**20:.1f} MB" if p.workbook.is_file() else "missing")
        for p in plants
    ]
    print(format_table(["plant", "workbook", "file"], rows))
    declared = "declared in" if any(p.declared for p in plants) else "none declared in"
    print(f"{declared} {settings.plants_path}")
    return EXIT_OK


def _plant_json(plant) -> dict:
    return {
        "id": plant.id,
        "workbook": str(plant.workbook),
        "declared": plant.declared,
        "exists": plant.workbook.is_file(),
    }


def cmd_demo(args: argparse.Namespace) -> int:
    from prodplan_pipeline.workbook.sample import write_sample

    _check_sample_options(args)
    settings = Settings.from_env()
    workbook = settings.workbook_path
    if not workbook.exists():
        progress = Progress()
        progress(f"writing a sample workbook (scale {args.scale:g}) to {workbook}")
        workbook.parent.mkdir(parents=True, exist_ok=True)
        write_sample(workbook, scale=args.scale, progress=progress)
    exit_code = _ingest(settings, workbook, args)
    # With --json, stdout must end with the JSON summary: the hints go to stderr then.
    print(_next_steps(), file=sys.stderr if args.json else sys.stdout)
    return exit_code


def _next_steps() -> str:
    program = _program()
    steps = [
        ("ui", "the Dagster UI on http://127.0.0.1:3000: this run, its assets and their checks"),
        ("serve", "the read API on http://127.0.0.1:8000 (interactive docs at /docs)"),
        ("status", "schema version, recent ingestion runs, feature gates, cache version"),
    ]
    return "next:\n" + "\n".join(f"  {program} {name:<6}  {what}" for name, what in steps)


def _program() -> str:
    """How to run prodplan again from here: plain "prodplan" when that is this installation's
    script on PATH, else the script's path (a virtualenv used without activating it)."""
    script = Path(sys.executable).parent / "prodplan"
    on_path = shutil.which("prodplan")
    if not script.exists() or (on_path and os.path.samefile(on_path, script)):
        return "prodplan"
    relative = os.path.relpath(script)
    return str(script) if relative.startswith("..") else relative


def _ingest(settings: Settings, workbook: Path, args: argparse.Namespace) -> int:
    from prodplan_pipeline.outcome import EXIT_OK, unchanged_outcome
    from prodplan_pipeline.workbook.inspect import WorkbookError, inspect_workbook

    try:
        info = inspect_workbook(workbook, settings.max_uncompressed)  # not a workbook: fails here, in a second
    except WorkbookError as error:
        if args.json:  # the promised last line of stdout, even for a bad file
            print(json.dumps({"exit_code": 1, "error": str(error), "sheets": []}))
        raise
    max_shrink = _max_shrink(args, settings)
    # Either way needs PRODPLAN_HOME's Dagster folder (the whole way starts by making it): a home
    # that cannot be used is named the same way before the quick answer connects to a server.
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    outcome = None if args.force else unchanged_outcome(settings, info)
    if outcome is None:
        from prodplan_pipeline.orchestration.launch import run_ingestion, show_progress

        show_progress()
        outcome = run_ingestion(settings, info.path, force=args.force, max_shrink=max_shrink)
    if outcome.sheets:
        print(_format_ingest(outcome))
    if outcome.analytics_rows:
        print(format_table(["analytics table", "rows"], list(outcome.analytics_rows.items())))
    if outcome.error and not outcome.failed_checks:
        print(f"prodplan {args.command}: {outcome.error}", file=sys.stderr)
    if outcome.failed_checks:
        print(
            f"prodplan {args.command}: blocking checks failed ({', '.join(outcome.failed_checks)}); "
            f"see {outcome.report}. Nothing downstream was refreshed.",
            file=sys.stderr,
        )
    elif outcome.unchanged:
        print(
            f"workbook unchanged: it is the snapshot of ingestion run {outcome.run_id}, which every "
            f"layer reflects; nothing to ingest, no Dagster run started ({outcome.seconds:.1f} s; "
            "--force re-reads it)"
        )
    elif outcome.exit_code == EXIT_OK:
        print(
            f"ingestion run {outcome.run_id}: every Excel row reconciled "
            f"({outcome.seconds:.1f} s, Dagster run {outcome.dagster_run_id[:8]})"
        )
    if args.json:
        print(json.dumps(outcome.as_json(), default=str))
    return outcome.exit_code


def _format_ingest(outcome) -> str:
    headers = [
        "sheet",
        "status",
        "excel",
        "inserted",
        "updated",
        "unchanged",
        "deleted",
        "duplicates",
        "rejected",
        "reconciled",
        "seconds",
    ]
    rows = [
        (
            s["sheet"],
            s["status"],
            s["rows_excel"],
            s["rows_inserted"],
            s["rows_updated"],
            s["rows_unchanged"],
            s["rows_deleted"],
            s["rows_duplicate"],
            s["rows_rejected"],
            s["reconciled"],
            s["seconds"],
        )
        for s in outcome.sheets
    ]
    return format_table(headers, rows)


def cmd_status(args: argparse.Namespace) -> int:
    from prodplan_pipeline.status import collect_status
    from prodplan_pipeline.warehouse import Warehouse

    warehouse = Warehouse.from_settings(Settings.from_env())
    with warehouse.connect() as conn:
        status = collect_status(conn)
    status["database"] = warehouse.display_url
    if args.json:
        print(json.dumps(status, default=str))
    else:
        print(_format_status(status))
    return EXIT_OK


def _format_status(status: dict) -> str:
    schema, cache = status["schema"], status["cache_version"]
    parts = [
        f"database       {status['database']}",
        f"schema         {schema['migrations_applied']} migrations applied (latest {schema['latest']})",
        f"cache version  {cache['version']} (updated {cache['updated_at']:%Y-%m-%d %H:%M:%S})",
        _format_snapshot(status["snapshot"]),
        f"fases partitions  {status['fases_partitions']['partitions']} monthly, "
        f"{status['fases_partitions']['default_rows']} rows in the default partition",
        "",
        "ingestion runs",
    ]
    runs = status["ingestion_runs"]
    parts.append(
        format_table(
            ["run", "status", "started", "finished", "message"],
            [
                (
                    r["run_id"],
                    r["status"],
                    f"{r['started_at']:%Y-%m-%d %H:%M:%S}",
                    f"{r['finished_at']:%H:%M:%S}" if r["finished_at"] else None,
                    r["message"],
                )
                for r in runs
            ],
        )
        if runs
        else "  none yet"
    )
    gates = status["feature_gates"]
    parts += [
        "",
        "feature gates",
        format_table(
            ["feature", "match rate", "threshold", "status"],
            [(g["feature"], g["match_rate"], g["threshold"], g["status"]) for g in gates],
        )
        if gates
        else "  not evaluated yet",
    ]
    return "\n".join(parts)


def _format_snapshot(snapshot: dict) -> str:
    facts, aggregates = snapshot["facts_run_id"], snapshot["aggregates_run_id"]
    if not snapshot["aggregates_catching_up"]:
        return f"snapshot       core and analytics reflect ingestion run {facts}"
    return (
        f"snapshot       core reflects ingestion run {facts}; analytics still reflect run "
        f"{aggregates} (catching up: the next `prodplan ingest` or the sensor completes them)"
    )


def _dagster_env() -> dict[str, str]:
    from prodplan_pipeline.orchestration.instance import dagster_environment

    return dagster_environment(Settings.from_env())


def cmd_env(args: argparse.Namespace) -> int:
    for name, value in _dagster_env().items():
        print(f"export {name}={shlex.quote(value)}")
    return EXIT_OK


def cmd_ui(args: argparse.Namespace) -> int:
    from prodplan_pipeline.paths import project_root

    # Before anything starts: dagster dev would announce the UI, fail to bind, and leave its
    # daemon running beside the one already on that port.
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    _check_port_free(UI_HOST, args.port)
    env = {**os.environ, **_dagster_env()}
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(project_root() / "workspace.yaml"),
        "-h",
        UI_HOST,
        "-p",
        str(args.port),
    ]
    settings = Settings.from_env()
    print(
        f"Dagster UI on http://{UI_HOST}:{args.port} (storage: database "
        f"'{settings.dagster_database}', Dagster's files under {settings.dagster_home}); "
        "Ctrl-C stops it.",
        file=sys.stderr,
        flush=True,
    )
    # In the folder of dagster.yaml (DAGSTER_HOME): dagster dev finds no second configuration.
    return _run_process_group(command, env, cwd=project_root())


def _run_process_group(command: list[str], env: dict[str, str], cwd: Path | None = None) -> int:
    """Run ``command`` in a session of its own and wait for it: its exit status, or 128 + the
    signal that stopped it. A STOP_SIGNALS signal stops it and its whole process group
    (webserver, daemon, code servers, runs); nothing of the group is left running on return."""
    received: list[int] = []
    handlers = {sig: signal.signal(sig, lambda signum, _: received.append(signum)) for sig in STOP_SIGNALS}
    try:
        # Its own session: a terminal's Ctrl-C reaches it once, through us, not twice.
        child = subprocess.Popen(command, env=env, cwd=cwd, start_new_session=True)
        try:
            code = _supervise(child, received)
        finally:
            _stop_group(child.pid)  # what outlived dagster dev; everything, if we failed above
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if received:
        return 128 + received[0]
    return code if code >= 0 else 128 - code


def _supervise(child: subprocess.Popen, received: list[int]) -> int:
    """Wait for ``child``, acting on the signals the handler appends to ``received``: the first
    asks dagster dev to stop (its services in order: the daemon before the code server it
    talks to; signalled together, the daemon logs a traceback per sensor); a second one, or a
    group still running UI_STOP_GRACE seconds later, kills the whole group. Done here rather
    than in the handler, so that a signal arriving while the child starts is acted on too."""
    acted_on, deadline = 0, None
    while child.poll() is None:
        if len(received) > acted_on:
            if acted_on == 0:
                print(
                    f"prodplan ui: stopping Dagster ({signal.Signals(received[0]).name}); again to kill it now",
                    file=sys.stderr,
                    flush=True,
                )
                # dagster dev handles SIGINT and SIGTERM alike, SIGHUP not at all.
                child.send_signal(signal.SIGINT if received[0] == signal.SIGINT else signal.SIGTERM)
                deadline = time.monotonic() + UI_STOP_GRACE
            else:
                _signal_group(child.pid, signal.SIGKILL)
            acted_on = len(received)
        elif deadline is not None and time.monotonic() > deadline:
            _signal_group(child.pid, signal.SIGKILL)
            deadline = None
        time.sleep(0.1)  # resumed after a signal's handler (PEP 475), so at most 0.1 s late
    return child.returncode


def _stop_group(group: int, grace: float = 10.0) -> None:
    """SIGTERM, then after ``grace`` seconds SIGKILL, to whatever of ``group`` still runs."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not _group_running(group):
            return
        _signal_group(group, sig)
        deadline = time.monotonic() + wait
        while _group_running(group) and time.monotonic() < deadline:
            time.sleep(0.1)


def _signal_group(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:  # the whole group has exited already
        pass


def _group_running(group: int) -> bool:
    """Whether a process of ``group`` still runs. Zombies do not count: an orphan's zombie stays
    until init reaps it, which a container's init may never do."""
    import psutil

    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == group and process.status() != psutil.STATUS_ZOMBIE:
                return True
        except (OSError, psutil.Error):  # exited meanwhile
            continue
    return False


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from prodplan_pipeline.serving.metrics import multiprocess_folder
    from prodplan_pipeline.warehouse import Warehouse

    if not 0 < args.port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    _check_port_free(args.host, args.port)
    settings = Settings.from_env()
    # Fail here, with one sentence, rather than in every worker with a traceback.
    warehouse = Warehouse.from_settings(settings)
    print(
        f"ProdPlan API on http://{args.host}:{args.port} (docs: /docs; database "
        f"{warehouse.display_url}; cache: {'Redis' if settings.redis_url else 'in-process'}; "
        f"writes {'enabled' if settings.api_key else 'disabled (no PRODPLAN_API_KEY)'}); "
        "Ctrl-C stops it.",
        file=sys.stderr,
        flush=True,
    )
    with multiprocess_folder():  # /metrics sums the workers' counts kept there
        uvicorn.run(
            "prodplan_pipeline.serving.api:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            access_log=args.access_log,
            log_level="warning",
        )
    return EXIT_OK


def _check_port_free(host: str, port: int) -> None:
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UserError(
                f"cannot listen on {host}:{port}: {error.strerror or error}; "
                "is another server using it? Choose another with --port"
            ) from None


def run() -> None:
    """The `prodplan` command: ``main``, then an exit without the interpreter's teardown. After
    an ingestion, freeing Dagster's, Great Expectations' and pandas' ~2,000 modules and objects
    took ~1.3 s of a command that had already finished; every file and connection is closed by
    then and nothing is registered to run at exit (the embedded server outlives the process)."""
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code or 0))


if __name__ == "__main__":
    run()
