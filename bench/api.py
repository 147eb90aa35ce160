"""API load benchmark: closed-loop clients against ``prodplan serve`` on a scale-N warehouse.

A weighted mix of endpoints; req/s, p50/p95/p99, errors and cache hit rate per endpoint, then the
same with a refresh (cache version bump) half-way: stale responses after it, and computations per
key (the stampede check).

    python bench/api.py --scale 1                          # 50 clients, 30 s, in-process cache
    python bench/api.py --scale 1 --redis                  # cache in Redis (db 14)
    python bench/api.py --scale 1 --workers 2 --redis
    python bench/api.py --scale 0.1 --duration 10 --baseline-duration 5
    python bench/api.py --scale 1 --keep                   # then: --database bench_api_xxxxxx
    python bench/api.py --scale 0.1 --metrics-cost         # (b) against (m), /metrics' counting off

Three phases, each against a fresh server subprocess: (a) baseline, PRODPLAN_API_CACHE=off;
(b) cached steady state; (c) cached, with a real refresh of one month (aggregates + views + version
bump in one transaction) started at duration/2; (c) runs on until at least 5 s after commit +
version TTL, however long the refresh took. The first --warmup seconds of every phase are load
but not measured. Uses PRODPLAN_DATABASE_URL's server when set, else the embedded one, in a fresh
database bench_api_* dropped at the end (unless --keep). Prints tables (progress on stderr) and
writes everything to bench/out/api.json. Targets: p95 <= 50 ms per endpoint, zero errors.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import accumulate
from pathlib import Path

import numpy as np
import psutil
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import drop, scratch_warehouse  # noqa: E402
from workbooks import OUT, sample_workbook  # noqa: E402

from prodplan_pipeline.analytics.aggregates import refresh_all  # noqa: E402
from prodplan_pipeline.analytics.rebuild import rebuild_downstream  # noqa: E402
from prodplan_pipeline.analytics.views import refresh_views  # noqa: E402
from prodplan_pipeline.ingest.pipeline import ingest_workbook  # noqa: E402
from prodplan_pipeline.serving.cache import InProcessCache  # noqa: E402
from prodplan_pipeline.settings import Settings  # noqa: E402
from prodplan_pipeline.textui import Progress, format_table  # noqa: E402
from prodplan_pipeline.warehouse import Warehouse  # noqa: E402
from prodplan_pipeline.warehouse.cache_version import bump_cache_version  # noqa: E402
from prodplan_pipeline.warehouse.connection import libpq_dsn, server_url  # noqa: E402

HOST = "127.0.0.1"
REDIS_URL = "redis://127.0.0.1:6379/14"
TARGET_P95_MS = 50.0
# The server reads the same variable: a response may carry the old version this long after a bump.
VERSION_TTL = float(os.environ.get("PRODPLAN_CACHE_VERSION_TTL", "1.0"))
GRACE = 15.0  # seconds in-flight requests may still take after the deadline; then they are errors
AFTER_BUMP = 5.0  # phase (c) goes on at least this long past commit + TTL, however long the refresh took
progress = Progress()
LRU_ENTRIES = InProcessCache().max_entries  # what build_cache gives each API process

AGGREGATES = {
    "/api/kpis/overview": 8,
    "/api/kpis/by-phase": 5,
    "/api/kpis/by-product": 5,
    "/api/quality/overview": 6,
    "/api/quality/by-phase": 5,
    "/api/quality/by-product": 5,
}
FIXED = {"/api/kpis/by-employee": 3, "/api/features": 3, "/api/prodplan/schedule/current": 5, "/api/health": 2}
ORDERS, ORDER, PHASES = "/api/prodplan/orders", "/api/prodplan/orders/{of_id}", "/api/prodplan/orders/{of_id}/phases"
OTHERS = {ORDERS: 14, ORDER: 15, PHASES: 15}
# Cache keys of these endpoints (order pages and single orders) are many: they can be evicted from
# the bounded in-process LRU and computed again. The others are few and hot: computed twice in one
# version and process, they were stampeded.
LONG_TAIL_KEYS = {"prodplan_orders", "prodplan_order", "prodplan_order-phases"}

# A record per response: (label, variant, status, latency s, X-Cache, X-Cache-Version, sent s after start)
LABEL, VARIANT, STATUS, LATENCY, XCACHE, VERSION, SENT = range(7)


# --- the warehouse and the parameters -----------------------------------------------------------


def build_warehouse(warehouse, scale: float) -> dict:
    """Ingest the sample workbook and rebuild everything downstream; seconds per step."""
    started = time.perf_counter()
    path = sample_workbook(scale, progress=lambda m: progress(f"sample: {m}"))
    sampled = time.perf_counter()
    progress(f"ingesting {path.name} into {warehouse.url.database}")
    result = ingest_workbook(warehouse, path)
    if not result.passed:
        raise RuntimeError("the sample workbook did not reconcile; the benchmark needs a clean load")
    ingested = time.perf_counter()
    progress("rebuilding derived columns, gates, aggregates, WIP and views")
    version = rebuild_downstream(warehouse)
    rebuilt = time.perf_counter()
    progress("VACUUM ANALYZE, so that autovacuum does not start on the fresh tables during a phase")
    vacuum_analyze(warehouse)
    done = time.perf_counter()
    seconds = {
        "workbook": sampled - started,
        "ingest": ingested - sampled,
        "rebuild": rebuilt - ingested,
        "vacuum analyze": done - rebuilt,
    }
    progress("warehouse ready in " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return {"seconds": seconds, "cache_version": version, "workbook": str(path)}


def vacuum_analyze(warehouse) -> None:
    conn = psycopg2.connect(libpq_dsn(warehouse.url))
    conn.autocommit = True  # VACUUM cannot run inside a transaction
    try:
        with conn.cursor() as cur:
            cur.execute("VACUUM (ANALYZE)")
    finally:
        conn.close()


@dataclass
class Params:
    ids: list[int]
    products: list[int]
    phases: list[int]
    periods: list[tuple[str, str]]  # inclusive from/to for the KPI and quality endpoints
    created: list[tuple[str, str]]  # created_from/created_to for order pages
    refresh: tuple[date, date]  # [first, end) refreshed in phase (c)


def month_start(day: date, back: int = 0) -> date:
    year, month = divmod(day.year * 12 + day.month - 1 - back, 12)
    return date(year, month + 1, 1)


def pick_parameters(warehouse, n_ids: int, seed: int) -> Params:
    """Existing ids, the busiest products and phases, and full months before the data's end."""
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT setseed(%s)", (1 / (seed + 2),))
        cur.execute("SELECT of_id FROM core.ordens_fabrico ORDER BY random() LIMIT %s", (n_ids,))
        ids = [r[0] for r in cur.fetchall()]
        top = "SELECT {0} FROM core.ordens_fabrico WHERE {0} IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC LIMIT %s"
        cur.execute(top.format("of_produto_id"), (5,))
        products = [r[0] for r in cur.fetchall()]
        cur.execute(top.format("of_fase_id"), (4,))
        phases = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT max(of_data_criacao)::date FROM core.ordens_fabrico")
        (last,) = cur.fetchone()
    months = [(month_start(last, back), month_start(last, back - 1)) for back in range(6, 0, -1)]
    periods = [(a.isoformat(), (b - timedelta(days=1)).isoformat()) for a, b in months]
    periods += [
        (months[3][0].isoformat(), periods[-1][1]),  # the last quarter, and a year before it
        (month_start(last, 18).isoformat(), (month_start(last, 6) - timedelta(days=1)).isoformat()),
    ]
    return Params(ids, products, phases, periods, periods[3:6], months[-1])


# --- the request mix ----------------------------------------------------------------------------


class Mix:
    """Weighted endpoints; a client's order pages sometimes follow their ``next_cursor``."""

    def __init__(self, params: Params):
        self.p = params
        routes = [(label, w, self._aggregate) for label, w in AGGREGATES.items()]
        routes += [(label, w, self._fixed) for label, w in FIXED.items()]
        routes += [
            (ORDERS, OTHERS[ORDERS], self._orders),
            (ORDER, OTHERS[ORDER], self._order),
            (PHASES, OTHERS[PHASES], self._phases),
        ]
        self.labels = [r[0] for r in routes]
        self.builders = [r[2] for r in routes]
        self.cum = list(accumulate(r[1] for r in routes))
        p = params
        self.filters = (
            [""]
            + [f"product={x}" for x in p.products]
            + [f"phase={x}" for x in p.phases]
            + [f"status={s}" for s in ("open", "finished", "on_time", "late")]
            + [f"product={x}&status=finished" for x in p.products[:3]]
            + [f"created_from={a}&created_to={b}" for a, b in p.created]
        )

    def next(self, rng: random.Random, state: dict) -> tuple[str, str, str]:
        i = bisect.bisect_right(self.cum, rng.random() * self.cum[-1])
        variant, path = self.builders[i](self.labels[i], rng, state)
        return self.labels[i], variant, path

    def _aggregate(self, label, rng, state):
        if rng.random() < 0.4:
            return "all days", label
        start, end = rng.choice(self.p.periods)
        return "period", f"{label}?from={start}&to={end}"

    def _fixed(self, label, rng, state):
        return "", label

    def _order(self, label, rng, state):
        return "", f"{ORDERS}/{rng.choice(self.p.ids)}"

    def _phases(self, label, rng, state):
        return "", f"{ORDERS}/{rng.choice(self.p.ids)}/phases"

    def _orders(self, label, rng, state):
        chain = state.get("chain")
        if chain and rng.random() < 0.75:
            query, cursor, left = chain
            state["pending"] = (query, left - 1)
            return "next page", f"{ORDERS}?{query}&cursor={cursor}"
        query = "&".join(filter(None, [rng.choice(self.filters), f"limit={rng.choice((20, 50, 100))}"]))
        state["pending"] = (query, rng.randint(1, 4))
        return "first page", f"{ORDERS}?{query}"

    @staticmethod
    def after_orders(state: dict, status: int, body: bytes) -> None:
        query, left = state.pop("pending")
        cursor = next_cursor(body) if status == 200 and left > 0 else None
        state["chain"] = (query, cursor, left) if cursor else None


def next_cursor(body: bytes) -> str | None:
    """The page's next_cursor without parsing the whole JSON (it is the envelope's last key)."""
    at = body.rfind(b'"next_cursor":"')
    if at < 0:
        return None
    start = at + len(b'"next_cursor":"')
    return body[start : body.index(b'"', start)].decode()


# --- the HTTP client ----------------------------------------------------------------------------


class HttpConnection:
    """One keep-alive HTTP/1.1 connection: GET, then status, headers and a Content-Length (or
    chunked) body. Far cheaper per request than a general client, so the client side does not
    eat the CPU the server needs."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None
        self.tail = f" HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: keep-alive\r\n\r\n".encode()

    async def open(self) -> HttpConnection:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port, limit=2**20)
        return self

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def get(self, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
        if self.writer is None:
            await self.open()
        self.writer.write(b"GET " + path.encode() + self.tail)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name:
                headers[name.strip().lower()] = value.strip()
        if b"content-length" in headers:
            body = await self.reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = await self._chunked()
        else:
            body = await self.reader.read()
            self.close()
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, headers, body

    async def _chunked(self) -> bytes:
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append(await self.reader.readexactly(size + 2))
            if size == 0:
                return b"".join(parts)[:-2]


# --- the load -----------------------------------------------------------------------------------


@dataclass
class Load:
    records: list[tuple]
    errors: list[dict]  # the first few non-200 answers, for the report
    wall: float
    seconds: float  # measured: from the end of the warm-up to the (possibly extended) deadline
    action: dict | None


async def virtual_client(
    conn: HttpConnection, mix: Mix, rng: random.Random, clock: dict, t0: float, records: list, errors: list
) -> None:
    """Closed loop: the next request goes out when the previous answer has fully arrived."""
    state: dict = {}
    while (sent := time.perf_counter()) < clock["deadline"] or clock["action_pending"]:
        label, variant, path = mix.next(rng, state)
        try:
            status, headers, body = await conn.get(path)
        except asyncio.CancelledError:
            records.append((label, variant, 0, time.perf_counter() - sent, None, None, sent - t0))
            errors.append({"path": path, "status": 0, "error": f"no answer within {GRACE:g} s after the end"})
            raise
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
            conn.close()
            status, headers, body = 0, {}, repr(error).encode()
        latency = time.perf_counter() - sent
        version = headers.get(b"x-cache-version")
        xcache = headers.get(b"x-cache")
        records.append(
            (label, variant, status, latency, xcache and xcache.decode(), int(version) if version else None, sent - t0)
        )
        if status != 200 and len(errors) < 20:
            errors.append({"path": path, "status": status, "body": body[:300].decode(errors="replace")})
        if label == ORDERS:
            mix.after_orders(state, status, body)


async def generate_load(port: int, mix: Mix, args, seconds: float, name: str, action=None) -> Load:
    """``args.clients`` virtual clients for warmup + ``seconds``; ``action`` = (at, fn) runs
    ``fn(t0)`` in a thread ``at`` seconds after the start (the refresh of phase (c))."""
    conns = [await HttpConnection(port).open() for _ in range(args.clients)]
    records, errors = [], []
    t0 = time.perf_counter()
    clock = {"deadline": t0 + args.warmup + seconds, "action_pending": action is not None}
    loop = asyncio.get_running_loop()
    doing = loop.create_task(_later(loop, action, t0, clock)) if action else None
    ticker = loop.create_task(_tick(name, records, t0, clock))
    tasks = [
        loop.create_task(virtual_client(conn, mix, random.Random(args.seed * 1000 + i), clock, t0, records, errors))
        for i, conn in enumerate(conns)
    ]
    pending = set(tasks)
    while pending and (clock["action_pending"] or time.perf_counter() < clock["deadline"] + GRACE):
        _, pending = await asyncio.wait(pending, timeout=1.0)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    wall = time.perf_counter() - t0
    ticker.cancel()
    for conn in conns:
        conn.close()
    return Load(records, errors, wall, clock["deadline"] - t0 - args.warmup, await doing if doing else None)


async def _later(loop, action, t0: float, clock: dict):
    """Run the action at its time; then keep the load going long enough to observe its effect."""
    at, fn = action
    try:
        await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
        done = await loop.run_in_executor(None, fn, t0)
        clock["deadline"] = max(clock["deadline"], t0 + done["committed_s"] + VERSION_TTL + AFTER_BUMP)
        return done
    finally:
        clock["action_pending"] = False


async def _tick(name: str, records: list, t0: float, clock: dict) -> None:
    while True:
        await asyncio.sleep(5)
        bad = sum(1 for r in records if r[STATUS] != 200)
        progress(
            f"{name}: {time.perf_counter() - t0:4.0f}/{clock['deadline'] - t0:.0f} s, "
            f"{len(records):,} responses, {bad:,} errors"
        )


def run_load(*args, **kwargs) -> Load:
    try:
        import uvloop  # the client's own loop overhead counts against the server's CPU

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(generate_load(*args, **kwargs))
    except ImportError:
        return asyncio.run(generate_load(*args, **kwargs))


# --- the server ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def control_get(port: int, path: str, timeout: float = 10) -> tuple[int, bytes]:
    """A one-off request on a new connection (with several workers, any of them may answer)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Server:
    """``prodplan serve`` as a subprocess in a session of its own, so its workers stop with it."""

    def __init__(self, url: str, home: Path, workers: int, cached: bool, redis_url: str | None, metrics: bool = True):
        self.port, self.workers = free_port(), workers
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in (
                "PRODPLAN_REDIS_URL",
                "PRODPLAN_API_CACHE",
                "PRODPLAN_API_KEY",
                "PRODPLAN_WORKBOOK",
                "PRODPLAN_API_METRICS",
            )
        }
        self.env.update(PRODPLAN_DATABASE_URL=url, PRODPLAN_HOME=str(home))
        if not metrics:
            self.env["PRODPLAN_API_METRICS"] = "off"
        if not cached:
            self.env["PRODPLAN_API_CACHE"] = "off"
        elif redis_url:
            self.env["PRODPLAN_REDIS_URL"] = redis_url
        self.log = home / f"serve_{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "prodplan_pipeline.cli",
                    "serve",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.log.read_text()[-2000:]}")
            try:
                if control_get(self.port, "/api/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"no 200 from /api/health within {timeout:g} s:\n{self.log.read_text()[-2000:]}")
        if len(self.cache_stats()) < self.workers:
            progress(f"warning: not every one of the {self.workers} workers answered yet")

    def cache_stats(self, tries: int = 200) -> list[dict]:
        """/api/cache/stats of every worker (new connections until each pid has answered)."""
        by_pid: dict[int, dict] = {}
        deadline = time.monotonic() + 20
        while len(by_pid) < self.workers and tries and time.monotonic() < deadline:
            tries -= 1
            status, body = control_get(self.port, "/api/cache/stats")
            if status == 200:
                stats = json.loads(body)
                by_pid[stats["pid"]] = stats
            else:
                time.sleep(0.1)
        return list(by_pid.values())

    def cpu_seconds(self) -> float:
        """User + system CPU of the server and its workers so far."""
        total = 0.0
        try:
            root = psutil.Process(self.proc.pid)
            for proc in [root, *root.children(recursive=True)]:
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            pass
        return total

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)  # our child's own process group: it and its workers
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        self.proc = None


# --- the phases ---------------------------------------------------------------------------------


def refresh_month(warehouse, first: date, end: date, t0: float) -> dict:
    """What a refresh run does, in one transaction: the month's aggregates, the views, the bump."""
    progress(f"refresh: {first}..{end - timedelta(days=1)} + views + version bump")
    started = time.perf_counter()
    with warehouse.connect() as conn:  # commits when the block ends
        refresh_all(conn, first, end)
        refresh_views(conn)
        version = bump_cache_version(conn)
    committed = time.perf_counter()
    progress(f"refresh: committed version {version} after {committed - started:.2f} s")
    return {
        "month": first.isoformat(),
        "started_s": started - t0,
        "committed_s": committed - t0,
        "seconds": committed - started,
        "version": version,
    }


def run_phase(name: str, ctx: dict, seconds: float, cached: bool, refresh: bool = False, metrics: bool = True) -> dict:
    args, params = ctx["args"], ctx["params"]
    clear_redis(ctx)  # every cached phase starts cold, as its fresh in-process cache does
    with Server(ctx["url"], ctx["home"], args.workers, cached, args.redis if cached else None, metrics) as server:
        idle = machine_busy_pct(1.0)
        progress(
            f"{name}: server pid {server.proc.pid} on port {server.port} ready (machine {idle:.0f}% "
            f"busy before the load); {args.clients} clients for {args.warmup:g} + {seconds:g} s"
        )
        action = None
        if refresh:
            first, end = params.refresh
            action = (args.warmup + seconds / 2, lambda t0: refresh_month(ctx["warehouse"], first, end, t0))
        cpu = CpuMeter(server, ctx["warehouse"])
        load = run_load(server.port, ctx["mix"], args, seconds, name, action=action)
        used = cpu.used(load.wall)
        stats = server.cache_stats() if cached else []
    result = summarise(load.records, args.warmup, load.seconds)
    result.update(
        name=name,
        cached=cached,
        seconds=load.seconds,
        wall=load.wall,
        errors_sample=load.errors,
        cpu={**used, "machine_busy_before_pct": idle},
        timeline=timeline(load.records),
        cache_stats=[{k: v for k, v in s.items() if k != "computations_by_key"} for s in stats],
    )
    if refresh and load.action:
        result["refresh"] = {
            **load.action,
            **bump_check(load.records, load.action),
            "new_version_keys": computations(stats, load.action["version"]),
            "old_version_keys": computations(stats, load.action["version"] - 1),
        }
    elif cached:
        versions = {r[VERSION] for r in load.records if r[VERSION] is not None}
        result["keys"] = [computations(stats, v) for v in sorted(versions)]
    return result


def _busy(t) -> float:
    # guest time is already part of user time: leave it out of the sum
    return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)


def machine_busy_pct(seconds: float) -> float:
    """How busy the machine is without our load (other processes share the 2 cores)."""
    before = psutil.cpu_times()
    time.sleep(seconds)
    return 100 * (_busy(psutil.cpu_times()) - _busy(before)) / (seconds * psutil.cpu_count())


class CpuMeter:
    """CPU seconds of the load generator (this process, this sampler included), the API server,
    the PostgreSQL backends of the scratch database, and everything else on the machine. Backends
    are sampled every ``every`` s because the read pool's overflow connections come and go
    (``sessions`` says how many were opened): a backend's CPU after its last sample is missed, and
    counts as "other"."""

    def __init__(self, server: Server, warehouse, every: float = 0.5):
        self.server, self.warehouse, self.database = server, warehouse, warehouse.url.database
        self.sessions = self._sessions()
        self.first = self._backends()
        self.last = dict(self.first)
        self.start = (time.process_time(), server.cpu_seconds(), _busy(psutil.cpu_times()))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every,), daemon=True)
        self._thread.start()

    def _sample(self, every: float) -> None:
        while not self._stop.wait(every):
            self.last.update(self._backends())

    def _sessions(self) -> int | None:
        """Sessions opened on the database so far (PostgreSQL 15+; None before)."""
        try:
            with self.warehouse.connect() as conn, conn.cursor() as cur:
                cur.execute("SELECT pg_stat_force_next_flush()")  # this very session counted too
                cur.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
                return cur.fetchone()[0]
        except psycopg2.Error:
            return None

    def _backends(self) -> dict[int, float]:
        found = {}
        for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
            line = " ".join(proc.info["cmdline"] or [])
            if (proc.info["name"] or "").startswith("postgres") and self.database in line.split():
                found[proc.pid] = proc.info["cpu_times"].user + proc.info["cpu_times"].system
        return found

    def used(self, wall: float) -> dict:
        self._stop.set()
        self._thread.join()
        self.last.update(self._backends())
        client, server, machine = self.start
        postgres = sum(v - self.first.get(pid, 0.0) for pid, v in self.last.items())  # new ones from 0
        c, s, m = time.process_time() - client, self.server.cpu_seconds() - server, _busy(psutil.cpu_times()) - machine
        return {
            "client_s": c,
            "server_s": s,
            "postgres_s": postgres,
            "other_s": max(0.0, m - c - s - postgres),
            "machine_busy_pct": 100 * m / (wall * psutil.cpu_count()),
            "postgres_sessions_opened": None if self.sessions is None else self._sessions() - self.sessions - 1,
        }


def clear_redis(ctx: dict) -> None:
    if not ctx["args"].redis:
        return
    import redis

    client = redis.Redis.from_url(ctx["args"].redis)
    for name in client.scan_iter(match=f"prodplan:cache:{ctx['warehouse'].url.database}:*", count=1000):
        client.delete(name)
    client.close()


# --- the figures --------------------------------------------------------------------------------


def endpoint_stats(rows: list[tuple], seconds: float) -> dict:
    ms = np.array([r[LATENCY] for r in rows]) * 1000
    p50, p95, p99 = (float(x) for x in np.percentile(ms, [50, 95, 99]))
    cached = [r[XCACHE] for r in rows if r[XCACHE] is not None]
    return {
        "requests": len(rows),
        "rps": len(rows) / seconds,
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "max_ms": float(ms.max()),
        "errors": sum(r[STATUS] != 200 for r in rows),
        "hit_rate": cached.count("hit") / len(cached) if cached else None,
    }


def summarise(records: list[tuple], warmup: float, seconds: float) -> dict:
    """Per endpoint, per (endpoint, variant) and overall, over the measured window only."""
    measured = [r for r in records if r[SENT] >= warmup]
    groups, variants = defaultdict(list), defaultdict(list)
    for r in measured:
        groups[r[LABEL]].append(r)
        variants[f"{r[LABEL]} [{r[VARIANT]}]" if r[VARIANT] else r[LABEL]].append(r)
    return {
        "endpoints": {k: endpoint_stats(v, seconds) for k, v in sorted(groups.items())},
        "variants": {k: endpoint_stats(v, seconds) for k, v in sorted(variants.items())},
        "overall": endpoint_stats(measured, seconds) if measured else {},
        "statuses": {str(s): n for s, n in sorted(_count(r[STATUS] for r in measured).items())},
        "unmeasured_warmup_requests": len(records) - len(measured),
    }


def _count(values) -> dict:
    counts: dict = defaultdict(int)
    for v in values:
        counts[v] += 1
    return counts


def timeline(records: list[tuple]) -> list[dict]:
    """Per second of send time: requests, p95, hits/misses, errors and versions answered."""
    buckets = defaultdict(list)
    for r in records:
        buckets[int(r[SENT])].append(r)
    return [
        {
            "second": s,
            "requests": len(rs),
            "p95_ms": float(np.percentile([r[LATENCY] * 1000 for r in rs], 95)),
            "hits": sum(r[XCACHE] == "hit" for r in rs),
            "misses": sum(r[XCACHE] == "miss" for r in rs),
            "errors": sum(r[STATUS] != 200 for r in rs),
            "versions": dict(_count(r[VERSION] for r in rs if r[VERSION] is not None)),
        }
        for s, rs in sorted(buckets.items())
    ]


def bump_check(records: list[tuple], action: dict) -> dict:
    """Stale = sent later than commit + version TTL but answered with an older version."""
    commit, new = action["committed_s"], action["version"]
    versioned = [r for r in records if r[VERSION] is not None]
    after_ttl = [r for r in versioned if r[SENT] > commit + VERSION_TTL]
    new_at = [r[SENT] + r[LATENCY] for r in versioned if r[VERSION] >= new]
    old_at = [r[SENT] + r[LATENCY] for r in versioned if r[VERSION] < new]
    return {
        "version_ttl_s": VERSION_TTL,
        "checked_responses": len(after_ttl),
        "stale_responses": sum(r[VERSION] < new for r in after_ttl),
        "old_version_within_ttl": sum(commit < r[SENT] <= commit + VERSION_TTL and r[VERSION] < new for r in versioned),
        "lag_first_new_s": min(new_at) - commit if new_at else None,
        "last_old_response_s": max(old_at) - commit if old_at else None,
    }


def computations(stats: list[dict], version: int) -> dict:
    """Per process: keys of ``version`` computed, and how often (> 1 is a stampede or a re-fill
    after the key was evicted from the bounded in-process LRU)."""
    prefix = f"pp:v{version}:"
    processes = []
    for s in stats:
        keys = {k: n for k, n in s["computations_by_key"].items() if k.startswith(prefix)}
        by_endpoint: dict = defaultdict(lambda: {"keys": 0, "computations": 0, "computed_more_than_once": 0, "max": 0})
        for key, n in keys.items():
            e = by_endpoint[key.split(":")[2]]
            e["keys"] += 1
            e["computations"] += n
            e["computed_more_than_once"] += n > 1
            e["max"] = max(e["max"], n)
        hot = [n for k, n in keys.items() if k.split(":")[2] not in LONG_TAIL_KEYS]
        processes.append(
            {
                "pid": s["pid"],
                "backend": s["backend"],
                "keys": len(keys),
                "computations": sum(keys.values()),
                "max_per_key": max(keys.values(), default=0),
                "keys_computed_more_than_once": sum(n > 1 for n in keys.values()),
                "hot_keys_computed_more_than_once": sum(n > 1 for n in hot),
                "waits_total": s["waits"],
                "by_endpoint": dict(by_endpoint),
            }
        )
    return {"version": version, "processes": processes}


# --- the report ---------------------------------------------------------------------------------


def describe(args, cached: bool) -> str:
    cache = ("Redis" if args.redis else "in-process") + " cache" if cached else "cache off"
    return f"{cache}, {args.workers} worker(s), {args.clients} clients"


def print_phase(args, phase: dict) -> None:
    o, cpu = phase["overall"], phase["cpu"]
    print(
        f"\n== {phase['name']}: {describe(args, phase['cached'])}, {phase['seconds']:.1f} s measured "
        f"(+{args.warmup:g} s warm-up): {o['requests']:,} requests, {o['rps']:,.0f} req/s, "
        f"{o['errors']:,} errors"
    )
    rows = [
        (
            label,
            s["requests"],
            round(s["rps"], 1),
            s["p50_ms"],
            s["p95_ms"],
            s["p99_ms"],
            s["errors"],
            None if s["hit_rate"] is None else 100 * s["hit_rate"],
        )
        for label, s in phase["endpoints"].items()
    ]
    rows.append(
        (
            "all",
            o["requests"],
            round(o["rps"], 1),
            o["p50_ms"],
            o["p95_ms"],
            o["p99_ms"],
            o["errors"],
            None if o["hit_rate"] is None else 100 * o["hit_rate"],
        )
    )
    print(format_table(["endpoint", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "hit %"], rows))
    print(
        f"CPU over the phase ({phase['wall']:.1f} s wall, {psutil.cpu_count()} cores, machine "
        f"{cpu['machine_busy_pct']:.0f}% busy; {cpu['machine_busy_before_pct']:.0f}% before the load): "
        f"load generator {cpu['client_s']:.1f} s, API server {cpu['server_s']:.1f} s, PostgreSQL backends "
        f"{cpu['postgres_s']:.1f} s ({cpu['postgres_sessions_opened'] or '-'} sessions opened), other "
        f"{cpu['other_s']:.1f} s"
    )
    if not phase["cached"] and o.get("hit_rate"):
        print(
            f"WARNING: {100 * o['hit_rate']:.0f}% of the answers say X-Cache: hit although the server runs "
            "with PRODPLAN_API_CACHE=off: this baseline is not uncached, and the ratios below are not "
            "against an uncached API"
        )
    if phase["errors_sample"]:
        print(f"statuses: {phase['statuses']}; first errors:")
        for e in phase["errors_sample"][:5]:
            print(f"  {e['status']} {e['path']}: {e.get('body') or e.get('error')}"[:300])
    for keys in phase.get("keys", []):
        print_computations(keys)


def print_computations(keys: dict) -> None:
    for p in keys["processes"]:
        lru = f" (the in-process LRU holds {LRU_ENTRIES:,})" if p["backend"] == "in-process" else ""
        print(
            f"keys of version {keys['version']} computed by pid {p['pid']} ({p['backend']}): {p['keys']:,} "
            f"keys{lru}, {p['computations']:,} computations, max {p['max_per_key']} per key, "
            f"{p['keys_computed_more_than_once']:,} keys computed more than once "
            f"({p['hot_keys_computed_more_than_once']} of them KPI/quality/features/schedule keys); "
            f"waits (misses that joined another's computation) {p['waits_total']:,}"
        )
        rows = [
            (e, v["keys"], v["computations"], v["computed_more_than_once"], v["max"])
            for e, v in sorted(p["by_endpoint"].items())
        ]
        print(format_table(["endpoint (key)", "keys", "computations", "keys computed > 1", "max per key"], rows))


def print_refresh(phase: dict) -> None:
    r = phase["refresh"]
    lag = "-" if r["lag_first_new_s"] is None else f"{r['lag_first_new_s']:.3f} s"
    last = "-" if r["last_old_response_s"] is None else f"{r['last_old_response_s']:.3f} s"
    print(
        f"\nrefresh of {r['month']} (aggregates + views + bump, one transaction): started at "
        f"{r['started_s']:.2f} s, committed at {r['committed_s']:.2f} s ({r['seconds']:.2f} s), version "
        f"{r['version']}"
    )
    print(
        f"stale responses (sent > commit + {r['version_ttl_s']:g} s, older version): "
        f"{r['stale_responses']:,} of {r['checked_responses']:,}; old-version answers sent within the TTL "
        f"window: {r['old_version_within_ttl']:,}; first new-version response {lag} after the commit, "
        f"last old-version response {last} after it"
    )
    print_computations(r["new_version_keys"])
    start, end = int(r["started_s"]) - 2, int(r["committed_s"]) + 5
    rows = [
        (
            t["second"],
            t["requests"],
            t["p95_ms"],
            t["hits"],
            t["misses"],
            t["errors"],
            " ".join(f"v{v}:{n}" for v, n in sorted(t["versions"].items())),
        )
        for t in phase["timeline"]
        if start <= t["second"] <= end
    ]
    print("around the refresh, per second sent:")
    print(format_table(["s", "requests", "p95 ms", "hits", "misses", "errors", "versions"], rows))


def comparison(phases: dict) -> list[tuple]:
    """Per endpoint: req/s cached / uncached, p95 uncached / cached (phase b against a)."""
    a, b = phases["a"], phases["b"]
    rows = []
    for label, s in [*b["endpoints"].items(), ("all", b["overall"])]:
        base = a["overall"] if label == "all" else a["endpoints"].get(label)
        if base:
            rows.append((label, s["rps"] / base["rps"], base["p95_ms"] / s["p95_ms"]))
    return rows


def server_cpu_per_request(phase: dict) -> float:
    """Microseconds of the API server's CPU per request answered, warm-up included (so is its CPU)."""
    answered = phase["overall"]["requests"] + phase["unmeasured_warmup_requests"]
    return 1e6 * phase["cpu"]["server_s"] / answered


def targets(phases: dict) -> list[tuple]:
    cached = [p for k, p in phases.items() if k in ("b", "c")]  # (m) is only the metrics baseline
    labels = sorted({label for p in cached for label in p["endpoints"]})
    rows = []
    for label in labels:
        row = [f"p95 <= {TARGET_P95_MS:g} ms: {label}"]
        for p in cached:
            p95 = p["endpoints"].get(label, {}).get("p95_ms")
            row += [p95, None if p95 is None else ("met" if p95 <= TARGET_P95_MS else "NOT MET")]
        rows.append(tuple(row))
    row = ["zero errors"]
    for p in cached:
        row += [p["overall"]["errors"], "met" if p["overall"]["errors"] == 0 else "NOT MET"]
    rows.append(tuple(row))
    refresh = phases["c"].get("refresh")
    if refresh:
        stale = refresh["stale_responses"]
        processes = refresh["new_version_keys"]["processes"]
        twice = sum(p["keys_computed_more_than_once"] for p in processes)
        hot = sum(p["hot_keys_computed_more_than_once"] for p in processes)
        rows.append(("no stale responses after commit + TTL", None, None, stale, "met" if stale == 0 else "NOT MET"))
        rows.append(
            ("no new-version key computed twice in a process", None, None, twice, "met" if twice == 0 else "NOT MET")
        )
        rows.append(
            (
                "  of which hot keys (KPI, quality, features, schedule)",
                None,
                None,
                hot,
                "met" if hot == 0 else "NOT MET",
            )
        )
    return rows


def code_state() -> dict:
    """The commit and the files changed since: which API code these figures belong to."""

    def git(*argv):
        found = subprocess.run(["git", *argv], cwd=Path(__file__).resolve().parent, capture_output=True, text=True)
        return found.stdout.rstrip() if found.returncode == 0 else None

    return {
        "commit": git("rev-parse", "HEAD"),
        "changed": (git("status", "--porcelain") or "").splitlines(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def report(args, build: dict, params: Params, phases: dict) -> None:
    built = ", ".join(f"{k} {v:.1f} s" for k, v in build["seconds"].items()) or f"reused {build['reused']}"
    print(f"\nwarehouse (scale {args.scale:g}): {built}")
    print(
        f"parameters: {len(params.ids):,} order ids; products {params.products}; phases {params.phases}; "
        f"periods {params.periods[0][0]}..{params.periods[5][1]} (6 months, a quarter, a year); "
        f"refreshed month {params.refresh[0]}"
    )
    for phase in phases.values():
        print_phase(args, phase)
        if phase.get("refresh"):
            print_refresh(phase)
    result = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "code": code_state(),
        "build": build,
        "parameters": {**params.__dict__, "ids": len(params.ids)},
        "phases": phases,
    }
    if "a" in phases:
        rows = comparison(phases)
        print("\ncached (b) against the baseline (a):")
        print(format_table(["endpoint", "req/s cached / uncached", "p95 uncached / cached"], rows))
        result["comparison"] = [dict(zip(("endpoint", "rps_ratio", "p95_ratio"), r, strict=True)) for r in rows]
    if "m" in phases:  # the cost of /metrics' counting: (b) with it against (m) without, run
        # before and after (b) so that a drift of the machine's speed cancels out
        with_metrics, without = phases["b"]["overall"], [phases[k]["overall"] for k in ("m", "m2")]
        cpu = {k: server_cpu_per_request(phases[k]) for k in ("b", "m", "m2")}
        cost = {
            "rps_ratio": with_metrics["rps"] / (sum(w["rps"] for w in without) / 2),
            "p95_ratio": with_metrics["p95_ms"] / (sum(w["p95_ms"] for w in without) / 2),
            "server_cpu_us_per_request": cpu,
            "cpu_ratio": cpu["b"] / ((cpu["m"] + cpu["m2"]) / 2),
        }
        print(
            f"\nmetrics cost: cached req/s with metrics / without = {cost['rps_ratio']:.3f} "
            f"(target >= 0.95); p95 with / without = {cost['p95_ratio']:.3f}; the server's CPU per "
            f"request {cpu['b']:.0f} us with, {cpu['m']:.0f} and {cpu['m2']:.0f} us without "
            f"(ratio {cost['cpu_ratio']:.3f}: the steadier figure when the machine's speed drifts)"
        )
        result["metrics_cost"] = cost
    rows = targets(phases)
    print("\ntargets:")
    print(format_table(["target", "(b) value", "(b)", "(c) value", "(c)"], rows))
    result["targets"] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwrote {args.out}")


# --- main ---------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds of phases (b) and (c)")
    parser.add_argument("--baseline-duration", type=float, default=10.0, help="phase (a); 0 skips it")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--metrics-cost",
        action="store_true",
        help="also run (b) with PRODPLAN_API_METRICS=off, before and after it, and print the ratio",
    )
    parser.add_argument(
        "--redis",
        nargs="?",
        const=REDIS_URL,
        default=None,
        metavar="URL",
        help=f"cache in Redis (default URL {REDIS_URL})",
    )
    parser.add_argument("--ids", type=int, default=2000, help="distinct order ids the clients ask for")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument(
        "--database",
        metavar="NAME",
        help="skip the build: use this database kept by an earlier --keep run (same --scale); it is not dropped",
    )
    parser.add_argument("--out", type=Path, default=OUT / "api.json")
    return parser.parse_args()


def existing_warehouse(name: str) -> Warehouse:
    """A database kept by an earlier ``--keep`` run: built already, and never dropped here."""
    return Warehouse(server_url(Settings.from_env()).set(database=name))


def _interrupted(signum, frame):
    raise KeyboardInterrupt  # so SIGTERM also stops the server and drops the database


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _interrupted)
    home = Path(tempfile.mkdtemp(prefix="prodplan_bench_api_"))
    warehouse = existing_warehouse(args.database) if args.database else scratch_warehouse("api")
    ctx = {
        "args": args,
        "home": home,
        "warehouse": warehouse,
        "url": warehouse.url.render_as_string(hide_password=False),
    }
    progress(f"{'existing' if args.database else 'scratch'} database {warehouse.url.database}")
    try:
        build = {"seconds": {}, "reused": args.database} if args.database else build_warehouse(warehouse, args.scale)
        ctx["params"] = params = pick_parameters(warehouse, args.ids, args.seed)
        ctx["mix"] = Mix(params)
        phases = {}
        if args.baseline_duration > 0:
            phases["a"] = run_phase("(a) baseline", ctx, args.baseline_duration, cached=False)
        if args.metrics_cost:
            phases["m"] = run_phase(
                "(m) cached, PRODPLAN_API_METRICS=off", ctx, args.duration, cached=True, metrics=False
            )
        phases["b"] = run_phase("(b) cached", ctx, args.duration, cached=True)
        if args.metrics_cost:
            phases["m2"] = run_phase("(m) again", ctx, args.duration, cached=True, metrics=False)
        phases["c"] = run_phase("(c) cached + refresh", ctx, args.duration, cached=True, refresh=True)
        report(args, build, params, phases)
    finally:
        clear_redis(ctx)
        if args.keep or args.database:
            progress(f"kept database {warehouse.url.database}")
        else:
            drop(warehouse)
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the server is stopped and the database dropped by then
        print("interrupted", file=sys.stderr)
        sys.exit(130)
