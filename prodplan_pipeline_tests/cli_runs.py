"""What the tests of killed and concurrent ingests share: a re-export of a workbook, the
warehouse of a CLI environment, and `prodplan ingest` run with its progress lines read as they
come."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import threading
import time
from pathlib import Path

from sqlalchemy.engine import make_url

from prodplan_pipeline.warehouse import Warehouse
from prodplan_pipeline_tests.conftest import RECENT_PARTITIONS, start_cli_forked
from prodplan_pipeline_tests.workbook_edit import header_index

# Where a re-export's edits start: the first day of the partitions (RECENT_PARTITIONS), so that
# every layer, the daily aggregates included, changes with them.
RE_EXPORTED_FROM = dt.datetime.fromisoformat(RECENT_PARTITIONS)


def re_exported(book) -> tuple[list, list]:
    """The rows a re-export edits: the first 400 phases and the first 60 orders that start on
    or after RE_EXPORTED_FROM (works on a read-only workbook too)."""

    def recent(sheet: str, column: str, count: int) -> list:
        ws = book[sheet]
        at = header_index(ws, column) - 1
        rows = (
            r
            for r in ws.iter_rows(min_row=2)
            if isinstance(r[at].value, dt.datetime) and r[at].value >= RE_EXPORTED_FROM
        )
        return list(itertools.islice(rows, count))

    return recent("FasesOrdemFabrico", "FaseOf_Inicio", 400), recent("OrdensFabrico", "Of_DataCriacao", 60)


def re_export(book) -> None:
    """The re-export's edits: those phases end two days later, those orders get new due dates,
    the 25 newest defects are withdrawn."""
    phases, orders = re_exported(book)
    fim = header_index(book["FasesOrdemFabrico"], "FaseOf_Fim") - 1
    inicio = header_index(book["FasesOrdemFabrico"], "FaseOf_Inicio") - 1
    for row in phases:  # every phase of those rows ends two days later
        row[fim].value = row[inicio].value + dt.timedelta(days=2, hours=3)
    transporte = header_index(book["OrdensFabrico"], "Of_DataTransporte") - 1
    criacao = header_index(book["OrdensFabrico"], "Of_DataCriacao") - 1
    for row in orders:  # new due dates
        row[transporte].value = row[criacao].value + dt.timedelta(days=20)
    defects = book["OrdemFabricoErros"]
    defects.delete_rows(defects.max_row - 24, 25)  # the 25 newest defects withdrawn


def warehouse_of(env: dict[str, str]) -> Warehouse:
    return Warehouse(make_url(env["PRODPLAN_DATABASE_URL"]))


class Ingest:
    """`prodplan ingest` in its own process group (forked: start_cli_forked), its progress lines
    read as they come."""

    def __init__(self, env: dict[str, str], workbook: Path):
        self.lines: list[str] = []
        progress, writer = os.pipe()
        with open(os.devnull, "w") as devnull:
            self.process = start_cli_forked(
                ["ingest", "--workbook", str(workbook)], env, stdout=devnull.fileno(), stderr=writer
            )
        os.close(writer)  # the child holds it: the reader ends when the child does
        threading.Thread(target=self._read, args=(progress,), daemon=True).start()

    def _read(self, progress: int) -> None:
        with open(progress, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 240) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if any(text in line for line in self.lines):
                return True
            time.sleep(0.01)
        return any(text in line for line in self.lines)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        assert self.process.wait(timeout=30) == -signal.SIGKILL, "killed while it ran"
