"""Ingestions started through the API: `prodplan ingest` in a child process of its own.

A child process, not a thread: an ingestion runs the whole Dagster graph for a minute or more,
and a crash or a memory spike there must not take the API down with it. The workbook is always
the server's configured one (``PRODPLAN_WORKBOOK``); a request can never name a file. One launch
at a time per API process; ingestions started elsewhere queue on the ingestion lock.
"""

from __future__ import annotations

import hmac
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from prodplan_pipeline.plants import PlantsError, default_workbook
from prodplan_pipeline.settings import Settings


class LaunchRefused(RuntimeError):
    """The launch was not started; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Launch:
    pid: int
    log: Path
    workbook: Path
    forced: bool


def check_api_key(settings: Settings, presented: str | None) -> None:
    """Writes need ``X-API-Key`` equal to ``PRODPLAN_API_KEY``; with no key configured, none pass."""
    if not settings.api_key:
        raise LaunchRefused(403, "writes are disabled on this server: PRODPLAN_API_KEY is not set")
    if not presented:
        raise LaunchRefused(401, "this endpoint needs the X-API-Key header")
    # Constant time: the comparison must not reveal how many leading characters were right.
    if not hmac.compare_digest(presented.encode(), settings.api_key.encode()):
        raise LaunchRefused(403, "the X-API-Key does not match")


class IngestionLauncher:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._child: subprocess.Popen | None = None

    def launch(self, force: bool = False) -> Launch:
        try:
            workbook = default_workbook(self.settings)
        except PlantsError as error:  # the plants file is the operator's to fix
            raise LaunchRefused(409, str(error)) from None
        if not workbook.is_file():
            raise LaunchRefused(
                409,
                f"the server's workbook {workbook} does not exist: declare the default plant's workbook "
                "(`prodplan plants add default --workbook PATH`) or set PRODPLAN_WORKBOOK, or run `prodplan demo` once",
            )
        with self._lock:
            if self._child is not None and self._child.poll() is None:
                raise LaunchRefused(
                    409,
                    f"an ingestion started by this API is still running "
                    f"(pid {self._child.pid}); see GET /api/ingestion/runs",
                )
            log = self._log_path()
            command = [
                sys.executable,
                "-m",
                "prodplan_pipeline.cli",
                "ingest",
                "--workbook",
                str(workbook),
                "--json",
                *(["--force"] if force else []),
            ]
            with log.open("w") as out:
                self._child = subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
                )
            return Launch(self._child.pid, log, workbook, force)

    def _log_path(self) -> Path:
        folder = self.settings.reports / "api-ingestions"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"ingest-{time.strftime('%Y%m%dT%H%M%S')}-{time.monotonic_ns() % 10**6}.log"
