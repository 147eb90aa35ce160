"""The API never serves a value from neither snapshot.

A warehouse built from workbook A behind a real `prodplan serve`; clients sample a set of URLs
continuously, from before a real `prodplan ingest` of workbook B (A re-exported with moved phase
ends, new due dates and fewer defects) starts until after it exits. Core lands in one commit, so
an order, its phases and the orders list are exactly A's or exactly B's answer. The aggregates
catch up in later transactions, so their endpoints may answer something in between, but only
under ``snapshot.catching_up``; and labels that say "caught up with run r" come with run r's body.

Two servers answer the same clients: one with its cache, one with ``PRODPLAN_API_CACHE=off``.
The cached one has computed every sampled URL before the ingest starts, so it computes again
only right after each bump; the uncached one computes every request, so whatever a computation
can get wrong about the moment a commit lands (the version it labels the body with, figures
read on either side of it) shows up at every commit, not only for a URL first asked then.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openpyxl
import pytest

from prodplan_pipeline.workbook.sample import write_sample

from .api_server import ApiServer
from .cli_runs import Ingest, re_export, re_exported, warehouse_of
from .conftest import RECENT_PARTITIONS, cli_environment, run_cli_forked
from .warehouse_queries import query
from .workbook_edit import edited

CLIENTS = 6  # ~9,000 responses per run; twelve gave ~13,000 for 7 s more of a 2-core machine
SETTLE = 2.0  # seconds the clients keep sampling after the ingest exited
INGEST_TIMEOUT = 300.0
LEAD_IN = 1.0  # seconds of sampling before the ingest starts: the old answers, counted
# Fields that name the version rather than the data: left out when bodies are compared.
ENVELOPE_ONLY = ("cache_version", "as_of", "snapshot")
CORE = ("order", "order-phases", "orders")  # read from core: one commit, old or new


def urls(of_id: int) -> dict[str, str]:
    return {
        "kpis/overview": "/api/kpis/overview",
        "kpis/by-phase": "/api/kpis/by-phase",
        "kpis/by-product": "/api/kpis/by-product",
        "quality/overview": "/api/quality/overview",
        "schedule": "/api/prodplan/schedule/current",
        "order": f"/api/prodplan/orders/{of_id}",
        "order-phases": f"/api/prodplan/orders/{of_id}/phases",
        "orders": f"/api/prodplan/orders?created_from={RECENT_PARTITIONS}",
    }


def digest(body: dict) -> str:
    data = {k: v for k, v in body.items() if k not in ENVELOPE_ONLY}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@pytest.fixture(scope="module")
def workbooks(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("consistency")
    write_sample(first := folder / "A.xlsx", scale=0.02, seed=5)
    return {"A": first, "B": edited(first, folder / "B.xlsx", re_export)}


def changed_order(workbook: Path) -> int:
    """An order B changes twice: its due date and its phases' ends (as re_export edits them)."""
    book = openpyxl.load_workbook(workbook, read_only=True)
    phases, orders = re_exported(book)
    phased = {row[1].value for row in phases}
    found = next(row[0].value for row in orders if row[0].value in phased)
    book.close()
    return found


@dataclass
class Sample:
    server: str
    name: str
    status: int
    digest: str | None  # of the body without its envelope; the error text when not a 200
    snapshot: dict | None
    version: int | None


@dataclass
class Load:
    """Client threads fetching every (server, URL) in turn, each from its own offset, until stopped."""

    servers: dict[str, ApiServer]
    paths: dict[str, str]
    samples: list[Sample] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        return threads

    def _client(self, offset: int) -> None:
        targets = [(server, name) for server in self.servers for name in self.paths]
        random.Random(offset).shuffle(targets)
        clients = {name: httpx.Client(base_url=s.url, timeout=30) for name, s in self.servers.items()}
        try:
            while not self.stop.is_set():
                for server, name in targets:
                    self.samples.append(self._sample(clients[server], server, name))  # thread-safe
        finally:
            for client in clients.values():
                client.close()

    def _sample(self, client: httpx.Client, server: str, name: str) -> Sample:
        try:
            response = client.get(self.paths[name])
        except httpx.HTTPError as error:
            return Sample(server, name, 0, f"{type(error).__name__}: {error}", None, None)
        if response.status_code != 200:
            return Sample(server, name, response.status_code, response.text[:300], None, None)
        body = response.json()
        return Sample(server, name, 200, digest(body), body["snapshot"], body["cache_version"])


def answers(server: ApiServer, paths: dict[str, str], version: int) -> dict[str, dict]:
    """Each URL's body once the server answers ``version`` (its NOTIFY arrives in ms)."""
    found = {}
    for name, path in paths.items():
        deadline = time.monotonic() + 5
        while (body := server.get(path).json()).get("cache_version") != version:
            assert time.monotonic() < deadline, f"{path} still answers {body}"
            time.sleep(0.05)
        found[name] = body
    return found


def database_version(env: dict[str, str]) -> int:
    return query(warehouse_of(env), "SELECT version FROM ops.cache_version")[0][0]


def classify(sample: Sample, old: dict[str, dict], new: dict[str, dict]) -> str:
    """old / new / between (neither, labelled catching up) / wrong: what one response was."""
    if sample.status != 200:
        return "wrong"
    name = sample.name
    body = {digest(old[name]): "old", digest(new[name]): "new"}.get(sample.digest)
    runs = {old[name]["snapshot"]["facts_run_id"]: "old", new[name]["snapshot"]["facts_run_id"]: "new"}
    labelled = runs.get(sample.snapshot["facts_run_id"])
    if name in CORE or not sample.snapshot["catching_up"]:
        # Core is one commit and its label says which; caught-up aggregates are that run's.
        return body if body is not None and body == labelled else "wrong"
    return body or "between"


def describe(sample: Sample, old: dict[str, dict], new: dict[str, dict]) -> str:
    if sample.status != 200:
        return f"{sample.server} {sample.name}: HTTP {sample.status} {sample.digest}"
    body = {digest(old[sample.name]): "old", digest(new[sample.name]): "new"}.get(sample.digest, "neither")
    labels = sample.snapshot
    return (
        f"{sample.server} {sample.name}: body {body}, version {sample.version}, facts run "
        f"{labels['facts_run_id']}, aggregates run {labels['aggregates_run_id']}, "
        f"catching_up {labels['catching_up']}"
    )


COLUMNS = ("old", "new", "between", "labelled catching-up", "wrong", "total")


def report(samples: list[Sample], kinds: list[str]) -> str:
    counts: dict[str, Counter] = {}
    for sample, kind in zip(samples, kinds, strict=True):
        row = counts.setdefault(f"{sample.server} {sample.name}", Counter())
        row[kind] += 1
        row["total"] += 1
        row["labelled catching-up"] += bool(sample.snapshot and sample.snapshot["catching_up"])
    widths = [max(8, len(c) + 2) for c in COLUMNS]
    lines = [f"{'endpoint':<26}" + "".join(f"{c:>{w}}" for c, w in zip(COLUMNS, widths, strict=True))]
    for name, row in [*sorted(counts.items()), ("all", sum(counts.values(), Counter()))]:
        lines.append(f"{name:<26}" + "".join(f"{row[c]:>{w}}" for c, w in zip(COLUMNS, widths, strict=True)))
    return "\n".join(lines)


@pytest.fixture(scope="module")
def serving_a(workbooks, databases, tmp_path_factory):
    """Workbook A ingested by `prodplan ingest` into fresh databases, behind the two servers:
    (environment, servers, the sampled URLs)."""
    # Partitions from RECENT_PARTITIONS, where B's edits fall: the aggregate answers change with
    # them, so the between-snapshot cases are sampled.
    env = {
        k: v
        for k, v in cli_environment(
            databases,
            tmp_path_factory.mktemp("consistency"),
            "consistency",
            PRODPLAN_PARTITIONS_START=RECENT_PARTITIONS,
        ).items()
        if k not in ("PRODPLAN_API_KEY", "PRODPLAN_REDIS_URL", "PRODPLAN_API_CACHE")
    }
    first = run_cli_forked(["ingest", "--workbook", str(workbooks["A"])], env)
    assert first.returncode == 0, first.stderr
    servers = {"cached": ApiServer(env), "uncached": ApiServer({**env, "PRODPLAN_API_CACHE": "off"})}
    try:
        yield env, servers, urls(changed_order(workbooks["A"]))
    finally:
        for server in servers.values():
            server.stop()


def test_every_response_is_the_old_snapshot_the_new_one_or_labelled_catching_up(serving_a, workbooks):
    env, servers, paths = serving_a
    old = same_answers(servers, paths, database_version(env))
    load = Load(servers, paths)
    ingest = sampled_ingest(load, env, workbooks["B"])
    assert ingest.process.returncode == 0, "".join(ingest.lines)
    new = same_answers(servers, paths, database_version(env))
    assert_consistent(load.samples, old, new)


def same_answers(servers: dict[str, ApiServer], paths: dict[str, str], version: int) -> dict[str, dict]:
    found = [answers(server, paths, version) for server in servers.values()]
    assert all(other == found[0] for other in found), "one answer per version, cached or not"
    return found[0]


def sampled_ingest(load: Load, env: dict[str, str], workbook: Path) -> Ingest:
    """`prodplan ingest` of ``workbook`` under ``load``: sampling from LEAD_IN seconds before it
    starts until SETTLE seconds after it exits (killed past INGEST_TIMEOUT)."""
    threads = load.start()
    try:
        time.sleep(LEAD_IN)
        ingest = Ingest(env, workbook)
        try:
            ingest.process.wait(timeout=INGEST_TIMEOUT)
        except subprocess.TimeoutExpired:
            ingest.kill()
            raise AssertionError(f"the ingest ran past {INGEST_TIMEOUT} s:\n{''.join(ingest.lines)}") from None
        time.sleep(SETTLE)
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=60)
    return ingest


def assert_consistent(samples: list[Sample], old: dict[str, dict], new: dict[str, dict]) -> None:
    assert not any(b["snapshot"]["catching_up"] for b in [*old.values(), *new.values()]), (old, new)
    assert {b["snapshot"]["facts_run_id"] for b in new.values()} == {old["orders"]["snapshot"]["facts_run_id"] + 1}, (
        "B landed as the next ingestion run"
    )
    unchanged = [name for name in old if digest(old[name]) == digest(new[name])]
    assert not unchanged, f"B changes every sampled answer, but not {unchanged}"
    kinds = [classify(s, old, new) for s in samples]
    print(f"\n{len(samples)} responses sampled by {CLIENTS} clients\n{report(samples, kinds)}")
    wrong = Counter(describe(s, old, new) for s, k in zip(samples, kinds, strict=True) if k == "wrong")
    assert not wrong, "responses from neither snapshot, or labelled with the other one:\n" + "\n".join(
        f"{n} x {what}" for what, n in wrong.most_common(20)
    )
    seen = Counter(kinds)
    assert seen["old"] > 0 and seen["new"] > 0, seen
