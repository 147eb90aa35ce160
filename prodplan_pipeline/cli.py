"""``prodplan``: the command line.

Input problems (a bad URL, an unreachable server, a bad option value) end with a one-paragraph
message on stderr and exit status 1, never a traceback.
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
        if not _is_user_error(exc):
            raise
        print(f"prodplan {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _is_user_error(exc: Exception) -> bool:
    from prodplan_pipeline.warehouse.connection import DatabaseConfigError
    from prodplan_pipeline.warehouse.migrations import MigrationError

    return isinstance(exc, (UserError, DatabaseConfigError, MigrationError, ValueError, OSError))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prodplan", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sample = commands.add_parser("sample", help="write a synthetic Folha_IA workbook")
    sample.add_argument("--out", required=True, type=Path, help="where to write the .xlsx")
    sample.add_argument("--scale", type=float, default=1.0, help="1 = the real size, ~1.1 M rows")
    sample.add_argument("--seed", type=int, default=7, help="same seed, same bytes")
    sample.set_defaults(handler=cmd_sample)

    status = commands.add_parser("status", help="schema, ingestion runs, gates, cache version")
    status.add_argument("--json", action="store_true", help="one JSON document on stdout")
    status.set_defaults(handler=cmd_status)

    ui = commands.add_parser("ui", help="start the Dagster UI and daemon (dagster dev)")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(handler=cmd_ui)

    env = commands.add_parser("env", help="print the shell exports that point dagster at ProdPlan")
    env.set_defaults(handler=cmd_env)
    return parser


def cmd_sample(args: argparse.Namespace) -> int:
    from prodplan_pipeline.workbook.sample import write_sample

    if args.out.suffix.lower() != ".xlsx":
        raise UserError(f"--out must name an .xlsx file, got {args.out}")
    progress = Progress()
    counts = write_sample(args.out, scale=args.scale, seed=args.seed, progress=progress)
    rows = [(sheet, n) for sheet, n in counts.items()]
    print(format_table(["sheet", "rows"], [*rows, ("total", sum(counts.values()))]))
    print(f"wrote {args.out} (scale {args.scale:g}, seed {args.seed}) in "
          f"{progress.elapsed():.1f} s")
    return EXIT_OK


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


if __name__ == "__main__":
    sys.exit(main())
