"""``prodplan``: the command line.

Input problems (a bad URL, an unreachable server, a bad option value) and a database lost in the
middle of a command end with a one-paragraph message on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from prodplan_pipeline.settings import Settings
from prodplan_pipeline.textui import Progress, format_table

EXIT_OK, EXIT_ERROR = 0, 1


class UserError(Exception):
    """A problem the user can fix; shown as a message, not a traceback."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("prodplan: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - classified below: user errors get a message
        message = _lost_database(exc) or (str(exc) if _is_user_error(exc) else None)
        if message is None:
            raise
        print(f"prodplan {args.command}: {message}", file=sys.stderr)
        return EXIT_ERROR


def _lost_database(exc: Exception) -> str | None:
    """The paragraph for a database lost or unreachable mid-command (not a bug: nothing to trace)."""
    from prodplan_pipeline.warehouse.lost import database_lost_message

    try:
        settings = Settings.from_env()
    except ValueError:  # a bad PRODPLAN_* value: name no server rather than fail again here
        settings = None
    return database_lost_message(exc, settings)


def _is_user_error(exc: Exception) -> bool:
    from prodplan_pipeline.warehouse.connection import DatabaseConfigError
    from prodplan_pipeline.warehouse.migrations import MigrationError
    from prodplan_pipeline.workbook.inspect import WorkbookError

    return isinstance(exc, (UserError, DatabaseConfigError, MigrationError, WorkbookError,
                            ValueError, OSError))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prodplan", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sample = commands.add_parser("sample", help="write a synthetic Folha_IA workbook")
    sample.add_argument("--out", required=True, type=Path, help="where to write the .xlsx")
    sample.add_argument("--scale", type=float, default=1.0, help="1 = the real size, ~1.1 M rows")
    sample.add_argument("--seed", type=int, default=7, help="same seed, same bytes")
    sample.add_argument("--employee-link-match", type=float, default=None, metavar="RATE",
                        help="share of employee-link phase ids that exist (default: the real 0.323)")
    sample.set_defaults(handler=cmd_sample)

    ingest = commands.add_parser("ingest", help="ingest a workbook: staging, validation, merge, checks")
    ingest.add_argument("--workbook", type=Path, help="default: PRODPLAN_WORKBOOK or the sample")
    ingest.add_argument("--json", action="store_true", help="end stdout with one JSON summary")
    ingest.add_argument("--force", action="store_true",
                        help="re-read and re-merge sheets whose content is unchanged")
    _add_max_shrink(ingest)
    ingest.set_defaults(handler=cmd_ingest)

    demo = commands.add_parser("demo", help="sample workbook + embedded database + full ingestion")
    demo.add_argument("--scale", type=float, default=0.1,
                      help="size of the generated sample (1 = the real 1.1 M rows)")
    demo.add_argument("--json", action="store_true", help="end stdout with one JSON summary")
    _add_max_shrink(demo)
    demo.set_defaults(handler=cmd_demo, force=False)

    status = commands.add_parser("status", help="schema, ingestion runs, gates, cache version")
    status.add_argument("--json", action="store_true", help="one JSON document on stdout")
    status.set_defaults(handler=cmd_status)

    ui = commands.add_parser("ui", help="start the Dagster UI and daemon (dagster dev)")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(handler=cmd_ui)

    serve = commands.add_parser("serve", help="the read API (KPIs, quality, orders) on 127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--host", default="127.0.0.1",
                       help="interface to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--workers", type=int, default=1,
                       help="processes; with PRODPLAN_REDIS_URL they share one cache")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(handler=cmd_serve)

    env = commands.add_parser("env", help="print the shell exports that point dagster at ProdPlan")
    env.set_defaults(handler=cmd_env)
    return parser


def _add_max_shrink(command: argparse.ArgumentParser) -> None:
    command.add_argument("--max-shrink", metavar="FRACTION", default=None,
                         help="the largest share of a sheet's rows one snapshot may delete "
                              "(default: PRODPLAN_MAX_SHRINK, else 0.20)")


def _max_shrink(args: argparse.Namespace, settings: Settings) -> float:
    from prodplan_pipeline.settings import fraction

    if args.max_shrink is None:
        return settings.max_shrink
    return fraction("--max-shrink", args.max_shrink, settings.max_shrink)


def cmd_sample(args: argparse.Namespace) -> int:
    from prodplan_pipeline.workbook.sample import write_sample

    if args.out.suffix.lower() != ".xlsx":
        raise UserError(f"--out must name an .xlsx file, got {args.out}")
    progress = Progress()
    counts = write_sample(args.out, scale=args.scale, seed=args.seed, progress=progress,
                          link_match_rate=args.employee_link_match)
    rows = [(sheet, n) for sheet, n in counts.items()]
    print(format_table(["sheet", "rows"], [*rows, ("total", sum(counts.values()))]))
    print(f"wrote {args.out} (scale {args.scale:g}, seed {args.seed}) in "
          f"{progress.elapsed():.1f} s")
    return EXIT_OK


def cmd_ingest(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    workbook = (args.workbook or settings.workbook_path).expanduser().resolve()
    return _ingest(settings, workbook, args)


def cmd_demo(args: argparse.Namespace) -> int:
    from prodplan_pipeline.workbook.sample import write_sample

    settings = Settings.from_env()
    workbook = settings.workbook_path
    if not workbook.exists():
        progress = Progress()
        progress(f"writing a sample workbook (scale {args.scale:g}) to {workbook}")
        workbook.parent.mkdir(parents=True, exist_ok=True)
        write_sample(workbook, scale=args.scale, progress=progress)
    return _ingest(settings, workbook, args)


def _ingest(settings: Settings, workbook: Path, args: argparse.Namespace) -> int:
    from prodplan_pipeline.orchestration.launch import EXIT_OK, run_ingestion, show_progress
    from prodplan_pipeline.workbook.inspect import WorkbookError, inspect_workbook

    try:
        inspect_workbook(workbook)  # a file that is not a workbook fails here, in a second
    except WorkbookError as error:
        if args.json:  # the promised last line of stdout, even for a bad file
            print(json.dumps({"exit_code": 1, "error": str(error), "sheets": []}))
        raise
    max_shrink = _max_shrink(args, settings)
    show_progress()
    outcome = run_ingestion(settings, workbook, force=args.force, max_shrink=max_shrink)
    if outcome.sheets:
        print(_format_ingest(outcome))
    if outcome.analytics_rows:
        print(format_table(["analytics table", "rows"], list(outcome.analytics_rows.items())))
    if outcome.error and not outcome.failed_checks:
        print(f"prodplan {args.command}: {outcome.error}", file=sys.stderr)
    if outcome.failed_checks:
        print(f"prodplan {args.command}: blocking checks failed ({', '.join(outcome.failed_checks)}); "
              f"see {outcome.report}. Nothing downstream was refreshed.", file=sys.stderr)
    elif outcome.exit_code == EXIT_OK:
        print(f"ingestion run {outcome.run_id}: every Excel row reconciled "
              f"({outcome.seconds:.1f} s, Dagster run {outcome.dagster_run_id[:8]})")
    if args.json:
        print(json.dumps(outcome.as_json(), default=str))
    return outcome.exit_code


def _format_ingest(outcome) -> str:
    headers = ["sheet", "status", "excel", "inserted", "updated", "unchanged", "deleted",
               "duplicates", "rejected", "reconciled", "seconds"]
    rows = [(s["sheet"], s["status"], s["rows_excel"], s["rows_inserted"], s["rows_updated"],
             s["rows_unchanged"], s["rows_deleted"], s["rows_duplicate"], s["rows_rejected"],
             s["reconciled"], s["seconds"]) for s in outcome.sheets]
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
    parts.append(format_table(["run", "status", "started", "finished", "message"], [
        (r["run_id"], r["status"], f"{r['started_at']:%Y-%m-%d %H:%M:%S}",
         f"{r['finished_at']:%H:%M:%S}" if r["finished_at"] else None, r["message"]) for r in runs
    ]) if runs else "  none yet")
    gates = status["feature_gates"]
    parts += ["", "feature gates", format_table(["feature", "match rate", "threshold", "status"], [
        (g["feature"], g["match_rate"], g["threshold"], g["status"]) for g in gates
    ]) if gates else "  not evaluated yet"]
    return "\n".join(parts)


def _format_snapshot(snapshot: dict) -> str:
    facts, aggregates = snapshot["facts_run_id"], snapshot["aggregates_run_id"]
    if not snapshot["aggregates_catching_up"]:
        return f"snapshot       core and analytics reflect ingestion run {facts}"
    return (f"snapshot       core reflects ingestion run {facts}; analytics still reflect run "
            f"{aggregates} (catching up: the next `prodplan ingest` or the sensor completes them)")


def _dagster_env() -> dict[str, str]:
    from prodplan_pipeline.orchestration.instance import dagster_environment

    return dagster_environment(Settings.from_env())


def cmd_env(args: argparse.Namespace) -> int:
    for name, value in _dagster_env().items():
        print(f"export {name}={shlex.quote(value)}")
    return EXIT_OK


def cmd_ui(args: argparse.Namespace) -> int:
    from prodplan_pipeline.paths import project_root

    env = {**os.environ, **_dagster_env()}
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(project_root() / "workspace.yaml"),
               "-h", "127.0.0.1", "-p", str(args.port)]
    print(f"Dagster UI on http://127.0.0.1:{args.port} (storage: database "
          f"'dagster', home {env['DAGSTER_HOME']}); Ctrl-C stops it.", file=sys.stderr)
    return subprocess.call(command, env=env)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from prodplan_pipeline.warehouse import Warehouse

    if not 0 < args.port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    _check_port_free(args.host, args.port)
    settings = Settings.from_env()
    # Fail here, with one sentence, rather than in every worker with a traceback.
    warehouse = Warehouse.from_settings(settings)
    print(f"ProdPlan API on http://{args.host}:{args.port} (docs: /docs; database "
          f"{warehouse.display_url}; cache: {'Redis' if settings.redis_url else 'in-process'}; "
          f"writes {'enabled' if settings.api_key else 'disabled (no PRODPLAN_API_KEY)'}); "
          "Ctrl-C stops it.", file=sys.stderr, flush=True)
    uvicorn.run("prodplan_pipeline.serving.api:create_app", factory=True, host=args.host,
                port=args.port, workers=args.workers, access_log=args.access_log, log_level="warning")
    return EXIT_OK


def _check_port_free(host: str, port: int) -> None:
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UserError(f"cannot listen on {host}:{port}: {error.strerror or error}; "
                            "is another server using it? Choose another with --port") from None


if __name__ == "__main__":
    sys.exit(main())
