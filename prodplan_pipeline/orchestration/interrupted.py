"""Close what a killed run left open, at the next start, in one line each.

A process killed with SIGKILL (or a machine that lost power) cannot record its own end: its
ingestion run stays ``running`` in ``ops.ingestion_runs`` and its Dagster runs stay STARTED. The
next `prodplan ingest` holds the ingestion lock, so no ingestion can be running: every such
ingestion run was interrupted. Dagster runs that `prodplan` launched in-process carry the
launching process's pid, so a STARTED one whose process is gone is dead too.
"""

from __future__ import annotations

import logging
import os
import socket

from dagster import DagsterRunStatus, RunsFilter

from prodplan_pipeline.ingest import runs
from prodplan_pipeline.up_to_date import CLI_LAUNCHER, HOST_TAG, LAUNCHED_BY_TAG, PID_TAG

progress = logging.getLogger("prodplan.progress")


def cli_run_tags() -> dict[str, str]:
    """Tags of a Dagster run that this process executes in-process."""
    return {LAUNCHED_BY_TAG: CLI_LAUNCHER, PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def close_interrupted(instance, warehouse) -> list[str]:
    """Mark interrupted ingestion runs and dead in-process Dagster runs failed; the lines said."""
    with warehouse.connect() as conn:
        closed = runs.close_interrupted(conn)
    lines = []
    for run_id, _dagster_run_id, started_at in closed:
        lines.append(
            f"ingestion run {run_id} (started {started_at:%Y-%m-%d %H:%M:%S}) was interrupted "
            "before it finished: marked 'interrupted'; this run repairs what it left"
        )
    for run in _dead_cli_runs(instance):
        instance.report_run_failed(run, "interrupted: the prodplan process running it stopped")
        lines.append(f"Dagster run {run.run_id[:8]} ({run.job_name}) was interrupted: marked failed")
    for line in lines:
        progress.warning(line)
    return lines


def _dead_cli_runs(instance) -> list:
    unfinished = instance.get_runs(
        filters=RunsFilter(
            statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.NOT_STARTED],
            tags={LAUNCHED_BY_TAG: CLI_LAUNCHER, HOST_TAG: socket.gethostname()},
        )
    )
    return [run for run in unfinished if not _alive(int(run.tags.get(PID_TAG, "0")))]


def _alive(pid: int) -> bool:
    if pid <= 0:  # no pid recorded: nothing can be running it
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Killed but not reaped yet: a killed run's side process (side_run.py) is orphaned, and
    waits for init to reap it."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):  # no /proc here: the signal's answer stands
        return False
