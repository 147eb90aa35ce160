"""A versioned response cache with singleflight, in-process or in Redis.

A key is (``ops.cache_version``, endpoint, normalised parameters). A refresh bumps the version,
so old keys are simply never asked for again: Redis expires them by TTL and the in-process LRU
evicts them by size; nothing deletes them explicitly. Values are JSON-serialisable objects,
stored as JSON text. Concurrent misses on one key run ``compute`` once: per process with a
future per key, and across processes with a short Redis lock (``SET NX PX``) whose expiry lets a
waiter recompute when the holder died instead of hanging.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from prodplan_pipeline.serving.metrics import count_cache_event
from prodplan_pipeline.settings import Settings
from prodplan_pipeline.warehouse.connection import fetch_dicts

DEFAULT_TTL = 300.0  # seconds a value lives; the version key already handles staleness
KEY_PREFIX = "pp"


class ComputeFailed(RuntimeError):
    """Another process's computation of the value this call waited for raised."""


# --- the version --------------------------------------------------------------------------------

# The labels come in the version's own statement: one snapshot of both, and the labels only
# change in a transaction that also bumps the version, so they are constant for a version.
READ_VERSION = """
    SELECT v.version, v.updated_at, l.facts_run_id, l.aggregates_run_id, l.aggregates_catching_up
    FROM ops.cache_version v CROSS JOIN ops.snapshot_labels l"""
# A body's envelope starts with its version (see api.Api._body), so a cached text tells
# which version it was computed at without being parsed.
VERSION_FIELD = '{"cache_version":'


@dataclass(frozen=True)
class Snapshot:
    """Which ingestion run the per-order facts reflect, and which one the aggregates reflect (the
    least caught-up analytics layer; 0 until every layer has a watermark)."""

    facts_run_id: int = 0
    aggregates_run_id: int = 0
    catching_up: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "facts_run_id": self.facts_run_id,
            "aggregates_run_id": self.aggregates_run_id,
            "catching_up": self.catching_up,
            "note": self.note(),
        }

    def note(self) -> str | None:
        if not self.catching_up:
            return None
        reflected = (
            f"reflect ingestion run {self.aggregates_run_id}"
            if self.aggregates_run_id
            else "reflect no ingestion run yet"
        )
        return (
            f"aggregates {reflected} and are catching up with run {self.facts_run_id}; "
            f"per-order facts are from run {self.facts_run_id}"
        )


class Version(NamedTuple):
    number: int
    as_of: Any  # when the version last changed: when the served data last changed
    snapshot: Snapshot


def version_of_row(row: dict[str, Any] | None) -> Version:
    """The Version a READ_VERSION row says (no row: the schema's first moments, version 0)."""
    if row is None:
        return Version(0, None, Snapshot())
    return Version(
        int(row["version"]),
        row["updated_at"],
        Snapshot(int(row["facts_run_id"]), int(row["aggregates_run_id"]), bool(row["aggregates_catching_up"])),
    )


def version_of_text(text: str) -> int | None:
    """The version a cached JSON body was computed at (None for a text without an envelope)."""
    if not text.startswith(VERSION_FIELD):
        return None
    return int(text[len(VERSION_FIELD) : text.index(",", len(VERSION_FIELD))])


class VersionSource:
    """``ops.cache_version`` and the snapshot labels, re-read at most once per ``ttl`` seconds
    (thread-safe).

    ``connect`` is a context-manager factory yielding a DB-API connection, e.g.
    ``Warehouse.connect``; a ``Warehouse`` itself is accepted too.
    """

    def __init__(self, connect: Any, ttl: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self._connect = getattr(connect, "connect", connect)
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._value: Version | None = None
        self._read_at = 0.0
        self.reads = 0  # database round trips, for tests and metrics

    def get(self) -> int:
        return self.current().number

    def current(self) -> Version:
        """One reader refreshes while the others wait on the lock: at most one query per ttl."""
        with self._lock:
            now = self._clock()
            if self._value is None or now - self._read_at >= self.ttl:
                self._value = self._read()
                self._read_at = self._clock()
            return self._value

    def peek(self) -> Version | None:
        """The local copy while it is fresh, else None: never touches the database (an event
        loop can call it without blocking)."""
        value, read_at = self._value, self._read_at
        if value is None or self._clock() - read_at >= self.ttl:
            return None
        return value

    def invalidate(self) -> None:
        """Forget the local copy (e.g. right after this process bumped the version)."""
        with self._lock:
            self._value = None

    def _read(self) -> Version:
        with self._connect() as conn, conn.cursor() as cur:
            rows = fetch_dicts(cur, READ_VERSION)
        self.reads += 1
        return version_of_row(rows[0] if rows else None)


# --- the key ------------------------------------------------------------------------------------


def normalise(value: Any) -> Any:
    """Parameters in one canonical shape: dict keys sorted (by json.dumps), None values dropped,
    list order kept (it can matter), scalars as strings so ``limit=10`` and ``"10"`` agree."""
    if isinstance(value, dict):
        return {str(k): normalise(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, (set, frozenset)):  # no order of its own: give it one
        return sorted(normalise(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():  # 10.0 and 10 are one parameter
        return str(int(value))
    if isinstance(value, decimal.Decimal):
        return format(value.normalize(), "f")
    return value if isinstance(value, str) else str(value)


def cache_key(version: int, endpoint: str, params: dict[str, Any] | None = None) -> str:
    """``pp:v<version>:<endpoint>:<sha256 of the normalised parameters, 32 hex>``."""
    canonical = json.dumps(normalise(params or {}), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(f"{endpoint}\n{canonical}".encode()).hexdigest()[:32]
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", endpoint).strip("_")[:48] or "root"
    return f"{KEY_PREFIX}:v{int(version)}:{readable}:{digest}"


def to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):  # sum(bigint) is numeric in PostgreSQL: counts stay ints
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


# --- the caches ---------------------------------------------------------------------------------


class Cache(Protocol):
    def get_or_compute(self, key: str, compute: Callable[[], Any], ttl: float = DEFAULT_TTL) -> Any: ...
    def get_or_compute_json(self, key: str, compute: Callable[[], Any], ttl: float = DEFAULT_TTL) -> str: ...
    def stats(self) -> dict[str, int]: ...


class _Counted:
    """Counters shared by both backends. hits: served a stored value; misses: found none (a
    waiter is a miss too); computations: calls of ``compute``; waits: misses that waited for
    another caller's computation instead of computing."""

    max_keys_counted = 10_000  # computations per key are kept for this many recent keys

    def __init__(self, exported: bool = True) -> None:
        self._exported = exported  # counted into /metrics too (the API's cache, not a helper store)
        self._counts = {"hits": 0, "misses": 0, "computations": 0, "waits": 0}
        self._per_key: OrderedDict[str, int] = OrderedDict()
        self._count_lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self._count_lock:
            self._counts[name] += 1
        if self._exported:  # /metrics: summed over the server's workers
            count_cache_event(name)

    def _count_computation(self, key: str) -> None:
        if self._exported:
            count_cache_event("computations")
        with self._count_lock:
            self._counts["computations"] += 1
            self._per_key[key] = self._per_key.get(key, 0) + 1
            self._per_key.move_to_end(key)
            while len(self._per_key) > self.max_keys_counted:
                self._per_key.popitem(last=False)

    def stats(self) -> dict[str, int]:
        with self._count_lock:
            return dict(self._counts)

    def computations_by_key(self) -> dict[str, int]:
        """How often each recent key was computed here: above 1 within one version is a stampede
        (or an expiry)."""
        with self._count_lock:
            return dict(self._per_key)

    def count_hit(self) -> None:
        """A hit served by a layer in front of this cache (see serving/front.py)."""
        self._count("hits")

    def peek(self, key: str) -> str | None:
        """The stored JSON text if this process holds it, counted as a hit; never blocks on I/O."""
        text = self._peek(key)
        if text is not None:
            self._count("hits")
        return text

    def _peek(self, key: str) -> str | None:  # pragma: no cover - per backend
        raise NotImplementedError

    def get_or_compute(self, key: str, compute: Callable[[], Any], ttl: float = DEFAULT_TTL) -> Any:
        """The value (a fresh copy each call, so callers cannot alter the cached one)."""
        return json.loads(self.get_or_compute_json(key, compute, ttl))

    def get_or_compute_json(
        self, key: str, compute: Callable[[], Any], ttl: float = DEFAULT_TTL
    ) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class _Flights:
    """Per-key futures: the first caller of a key leads, the others wait for its outcome."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._inflight: dict[str, Future] = {}

    def run(self, key: str, lookup: Callable[[], str | None], lead: Callable[[], str]) -> tuple[str, str]:
        """(text, how) with how in hit / wait / lead. ``lookup`` runs under ``self.lock`` so a
        caller sees either the stored value or the flight that is storing it, never neither."""
        with self.lock:
            text = lookup()
            if text is not None:
                return text, "hit"
            future = self._inflight.get(key)
            leader = future is None
            if leader:
                future = self._inflight[key] = Future()
        if not leader:
            return future.result(), "wait"  # re-raises the leader's exception
        try:
            text = lead()
        except BaseException as exc:
            self._land(key)
            future.set_exception(exc)
            raise
        self._land(key)
        future.set_result(text)
        return text, "lead"

    def _land(self, key: str) -> None:
        with self.lock:
            del self._inflight[key]


def entry_bytes(key: str, value: str | bytes) -> int:
    """What an entry costs the bound: its key and its body, in UTF-8 bytes (a str body as sent).
    Keys count too: a front-cache key holds the whole query string, which a client chooses."""
    return len(key.encode()) + (len(value) if isinstance(value, bytes) else len(value.encode()))


class InProcessCache(_Counted):
    """An LRU of JSON texts bounded by entries and by bytes held (keys and bodies), with
    per-entry expiry and singleflight. The default holds every order of a full-size warehouse
    (27k orders x 2 endpoints) without evicting: an LRU smaller than the working set recomputes
    the same keys."""

    def __init__(
        self,
        max_entries: int = 100_000,
        max_bytes: int = 256 * 2**20,
        clock: Callable[[], float] = time.monotonic,
        exported: bool = True,
    ):
        super().__init__(exported)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._bytes = 0
        self._clock = clock
        self._flights = _Flights()
        # key -> (expiry, text, entry_bytes): the size is kept so evicting never re-measures.
        self._entries: OrderedDict[str, tuple[float, Any, int]] = OrderedDict()

    def get_or_compute_json(self, key: str, compute: Callable[[], Any], ttl: float = DEFAULT_TTL) -> str:
        text, how = self._flights.run(key, lambda: self._lookup(key), lambda: self._compute_store(key, compute, ttl))
        self._count("hits" if how == "hit" else "misses")
        if how == "wait":
            self._count("waits")
        return text

    def _lookup(self, key: str) -> str | None:  # caller holds the flights' lock
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            self._bytes -= entry[2]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def _peek(self, key: str) -> str | None:
        with self._flights.lock:
            return self._lookup(key)

    def _compute_store(self, key: str, compute: Callable[[], Any], ttl: float) -> str:
        # An exception propagates before anything is stored: the next caller computes afresh.
        self._count_computation(key)
        text = to_json(compute())
        self.put(key, text, ttl)
        return text

    def put(self, key: str, text: str | bytes, ttl: float = DEFAULT_TTL) -> None:
        """Store a JSON text (e.g. one fetched from a shared cache) under ``key``. An entry
        larger than the whole bound is not stored: it would evict everything and still exceed it."""
        size = entry_bytes(key, text)
        with self._flights.lock:
            old = self._entries.pop(key, None)
            self._bytes -= old[2] if old else 0
            if size > self.max_bytes:
                return
            self._bytes += size
            self._entries[key] = (self._clock() + ttl, text, size)
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                self._bytes -= self._entries.popitem(last=False)[1][2]

    @property
    def bytes_held(self) -> int:
        """Bytes of the entries held now (keys and bodies), as the bound counts them."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._flights.lock:
            self._entries.clear()
            self._bytes = 0


# Delete the lock only if we still own it (it may have expired and been taken by another);
# with ARGV[2] set, first leave an error marker for the waiters of this computation.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  if ARGV[2] ~= '' then redis.call('set', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
  return redis.call('del', KEYS[1])
end
return 0
"""


class RedisCache(_Counted):
    """JSON texts in Redis under ``namespace + key`` with a TTL; singleflight across processes.

    The winner of ``SET lock:<key> <token> NX PX lock_ms`` computes, stores the value, then
    releases its lock. The others poll until the value appears; if the lock vanishes without a
    value (holder died or lock expired) they race for it again, so nobody waits on a dead
    holder for longer than ``lock_ms``. ``max_wait`` bounds any one call's waiting in total:
    past it a caller computes without the lock. Process-local singleflight comes first, so the
    threads of one process send a single contender to Redis.

    Every value this process obtains is also kept in a small local LRU that :meth:`peek` reads:
    a key names one version's value, so the local copy cannot be older than its key, and hits
    on hot keys cost no round trip.
    """

    def __init__(
        self,
        client: Any,
        namespace: str = "prodplan:cache:",
        lock_ms: int = 10_000,
        poll_interval: float = 0.02,
        max_wait: float | None = None,
        error_ms: int = 2_000,
        local_entries: int = 100_000,
    ):
        super().__init__()
        self.client = client
        self.namespace = namespace
        self.lock_ms = lock_ms
        self.poll_interval = poll_interval
        self.max_wait = 2 * lock_ms / 1000 if max_wait is None else max_wait
        self.error_ms = error_ms
        self._release = client.register_script(_RELEASE)
        self._flights = _Flights()
        self._local = InProcessCache(max_entries=local_entries)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisCache:
        import redis  # imported here so the in-process cache needs no Redis client

        return cls(redis.Redis.from_url(url, socket_timeout=5), **kwargs)

    def get_or_compute_json(self, key: str, compute: Callable[[], Any], ttl: float = DEFAULT_TTL) -> str:
        text, how = self._flights.run(key, lambda: None, lambda: self._shared(key, compute, ttl))
        if how == "wait":  # a thread of this process fetched it for us
            self._count("misses")
            self._count("waits")
        self._local.put(key, text, ttl)
        return text

    def _peek(self, key: str) -> str | None:
        return self._local._peek(key)

    def _shared(self, key: str, compute: Callable[[], Any], ttl: float) -> str:
        value_key, lock_key, error_key = self._keys(key)
        deadline = time.monotonic() + self.max_wait
        waited = False
        while True:
            value = self.client.get(value_key)
            if value is not None:
                self._count("waits" if waited else "hits")
                return value.decode()
            if not waited:
                self._count("misses")
            if time.monotonic() >= deadline:  # a live but slow holder: do not wait forever
                return self._compute_store(value_key, compute, ttl)
            token = uuid.uuid4().hex
            if self.client.set(lock_key, token, nx=True, px=self.lock_ms):
                return self._lead(key, token, compute, ttl)
            waited = True
            value = self._wait(value_key, lock_key, error_key, deadline)
            if value is not None:
                self._count("waits")
                return value

    def _lead(self, key: str, token: str, compute: Callable[[], Any], ttl: float) -> str:
        value_key, lock_key, error_key = self._keys(key)
        self.client.delete(error_key)  # a marker left by an earlier failure is not ours
        try:
            # Someone may have stored the value between our GET and our SET NX.
            value = self.client.get(value_key)
            text = value.decode() if value is not None else self._compute_store(value_key, compute, ttl)
        except BaseException as exc:
            self._release(keys=[lock_key, error_key], args=[token, f"{type(exc).__name__}: {exc}", self.error_ms])
            raise
        self._release(keys=[lock_key, error_key], args=[token, "", 0])
        return text

    def _compute_store(self, value_key: str, compute: Callable[[], Any], ttl: float) -> str:
        self._count_computation(value_key[len(self.namespace) :])
        text = to_json(compute())
        self.client.set(value_key, text.encode(), px=max(1, int(ttl * 1000)))
        return text

    def _wait(self, value_key: str, lock_key: str, error_key: str, deadline: float) -> str | None:
        """The value once stored; None when the lock is gone without one (or time is up)."""
        while time.monotonic() < deadline:
            time.sleep(self.poll_interval)
            value, lock, error = self.client.mget([value_key, lock_key, error_key])
            if value is not None:
                return value.decode()
            if error is not None:
                raise ComputeFailed(error.decode())
            if lock is None:
                return None
        return None

    def _keys(self, key: str) -> tuple[str, str, str]:
        full = self.namespace + key
        return full, f"{self.namespace}lock:{key}", f"{self.namespace}error:{key}"

    def clear(self) -> None:
        """Delete every key of this namespace (tests; never needed for invalidation)."""
        for name in self.client.scan_iter(match=self.namespace + "*", count=500):
            self.client.delete(name)
        self._local.clear()


class NullCache(_Counted):
    """No caching at all: every call computes. The baseline the API benchmark compares with
    (``PRODPLAN_API_CACHE=off``); never a production setting."""

    def get_or_compute_json(self, key: str, compute: Callable[[], Any], ttl: float = DEFAULT_TTL) -> str:
        self._count("misses")
        self._count_computation(key)
        return to_json(compute())

    def _peek(self, key: str) -> str | None:
        return None


def build_cache(
    settings: Settings | None = None, namespace: str = "prodplan:cache:", **kwargs: Any
) -> InProcessCache | RedisCache | NullCache:
    """Redis when ``PRODPLAN_REDIS_URL`` is set (shared by every API process), else in-process.
    ``namespace`` separates warehouses that share one Redis (their versions would collide)."""
    settings = settings or Settings.from_env()
    if not settings.api_cache:
        return NullCache()
    if settings.redis_url:
        return RedisCache.from_url(settings.redis_url, namespace=namespace, **kwargs)
    return InProcessCache(**kwargs)
