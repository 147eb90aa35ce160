"""`prodplan serve` in a real subprocess on a free port, for the API tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .conftest import PRODPLAN_VARIABLES, REPO_ROOT, start_cli_forked


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiServer:
    """One server process; ``get``/``post`` speak real HTTP to it. Forked from the fork server
    (``conftest.start_cli_forked``: ~2.5 s of imports less per start) unless ``fresh``: a new
    interpreter, as `prodplan serve` starts for a user (the main API tests' server)."""

    def __init__(self, env: dict[str, str], workers: int = 1, startup_timeout: float = 90, fresh: bool = False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(env["PRODPLAN_HOME"]) / f"serve-{self.port}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        args = ["serve", "--port", str(self.port), "--workers", str(workers)]
        with self.log.open("w") as out:
            if fresh:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "prodplan_pipeline.cli", *args],
                    env=env,
                    cwd=REPO_ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            else:
                self.process = start_cli_forked(args, env, stdout=out.fileno(), stderr=out.fileno())
        self.client = httpx.Client(base_url=self.url, timeout=30)
        self._wait_ready(startup_timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prodplan serve exited ({self.process.returncode}):\n{self.log.read_text()}")
            try:
                if self.client.get("/api/health").status_code in (200, 503):
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prodplan serve did not answer within {timeout} s:\n{self.log.read_text()}")

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return self.client.post(path, **kwargs)

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def server_env(home: Path, database_url: str | None, **extra: str) -> dict[str, str]:
    """The test process's environment without the user's PRODPLAN_* settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in PRODPLAN_VARIABLES and k not in ("PRODPLAN_API_KEY", "PRODPLAN_REDIS_URL", "PRODPLAN_API_CACHE")
    }
    env["PRODPLAN_HOME"] = str(home)
    if database_url:
        env["PRODPLAN_DATABASE_URL"] = database_url
    return {**env, **extra}
