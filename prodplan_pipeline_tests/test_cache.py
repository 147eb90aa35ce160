"""The versioned response cache: keys, singleflight in-process and across processes (real Redis),
dead lock holders, failing computations, and the version read from a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
import uuid

import pytest
import redis

from prodplan_pipeline.serving.cache import (
    ComputeFailed,
    InProcessCache,
    RedisCache,
    VersionSource,
    build_cache,
    cache_key,
)
from prodplan_pipeline.settings import Settings
from prodplan_pipeline.warehouse import Warehouse

from .api_helpers import together
from .conftest import REPO_ROOT


# A dedicated DB number and a random namespace per test: shared Redis servers stay untouched.
@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    client.close()


@pytest.fixture
def namespace(redis_client):
    prefix = f"prodplan-test:{uuid.uuid4().hex[:10]}:"
    yield prefix
    for name in redis_client.scan_iter(match=prefix + "*", count=500):
        redis_client.delete(name)


def redis_cache(client, namespace, **kwargs) -> RedisCache:
    return RedisCache(client, namespace=namespace, **kwargs)


class SlowCompute:
    """Counts its calls (thread-safe) and takes ``seconds`` so concurrent callers overlap."""

    def __init__(self, seconds: float = 0.3, value=None, error: Exception | None = None):
        self.seconds, self.value, self.error = seconds, value, error
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            self.calls += 1
        time.sleep(self.seconds)
        if self.error is not None:
            raise self.error
        return self.value if self.value is not None else {"calls": self.calls}


# --- keys ---------------------------------------------------------------------------------------


def test_cache_key_normalises_parameters():
    a = cache_key(
        7,
        "/kpis/daily",
        {"line": "L1", "limit": 10, "from": dt.date(2026, 1, 2), "shift": None, "fields": ["b", "a"], "active": True},
    )
    b = cache_key(
        7, "/kpis/daily", {"fields": ["b", "a"], "from": "2026-01-02", "active": "true", "limit": "10", "line": "L1"}
    )
    assert a == b
    assert a.startswith("pp:v7:kpis_daily:") and len(a.rsplit(":", 1)[1]) == 32
    assert cache_key(7, "/kpis/daily", {"fields": ["a", "b"]}) != cache_key(
        7, "/kpis/daily", {"fields": ["b", "a"]}
    )  # list order is meaningful
    assert cache_key(8, "/kpis/daily", {}) != cache_key(7, "/kpis/daily", {})
    assert cache_key(7, "/kpis/weekly", {}) != cache_key(7, "/kpis/daily", {})
    assert cache_key(7, "/x", {"n": {"b": 1, "a": None}}) == cache_key(7, "/x", {"n": {"b": "1"}})


def test_build_cache_defaults_to_in_process(tmp_path):
    assert isinstance(build_cache(Settings(home=tmp_path)), InProcessCache)


def test_build_cache_uses_redis_when_configured(tmp_path, redis_url):
    cache = build_cache(Settings(home=tmp_path, redis_url=redis_url))
    assert isinstance(cache, RedisCache)
    cache.client.close()


# --- in-process ---------------------------------------------------------------------------------


def test_in_process_concurrent_misses_compute_once():
    cache, compute = InProcessCache(), SlowCompute(value={"rows": [1, 2, 3]})
    results = together(20, lambda _: cache.get_or_compute("k", compute))
    assert compute.calls == 1
    assert results == [{"rows": [1, 2, 3]}] * 20
    assert cache.get_or_compute("k", compute) == {"rows": [1, 2, 3]}
    assert cache.stats() == {"hits": 1, "misses": 20, "computations": 1, "waits": 19}


def test_in_process_failure_reaches_every_waiter_and_is_not_cached():
    cache, failing = InProcessCache(), SlowCompute(error=ValueError("boom"))
    results = together(10, lambda _: cache.get_or_compute("k", failing))
    assert failing.calls == 1
    assert all(isinstance(r, ValueError) and str(r) == "boom" for r in results)
    assert cache.get_or_compute("k", lambda: "fresh") == "fresh"  # nothing was stored
    assert cache.stats()["computations"] == 2


def test_in_process_lru_and_expiry():
    now = [0.0]
    cache = InProcessCache(max_entries=2, clock=lambda: now[0])
    for key in "abc":
        cache.get_or_compute(key, lambda k=key: k, ttl=10)
    assert len(cache) == 2 and cache.get_or_compute("a", lambda: "again") == "again"  # evicted
    now[0] = 11.0
    assert cache.get_or_compute("c", lambda: "expired") == "expired"


def test_returned_values_are_copies():
    cache = InProcessCache()
    first = cache.get_or_compute("k", lambda: {"items": [1]})
    first["items"].append(2)
    assert cache.get_or_compute("k", lambda: None) == {"items": [1]}


# --- the version --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache_warehouse(databases) -> Warehouse:
    """A warehouse of its own: these tests bump the version, which others may rely on."""
    wh = databases.warehouse("cache")
    yield wh


def bump(warehouse: Warehouse) -> None:
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute("UPDATE ops.cache_version SET version = version + 1")


def test_version_bump_is_seen_within_a_second_and_recomputes(cache_warehouse):
    versions, cache = VersionSource(cache_warehouse, ttl=1.0), InProcessCache()
    compute = SlowCompute(seconds=0)

    def call():
        return cache.get_or_compute(cache_key(versions.get(), "/kpis", {"line": "L1"}), compute)

    first = call()
    for _ in range(50):
        assert call() == first
    assert versions.reads == 1  # the version is read once per TTL, not per request
    before = versions.get()
    bump(cache_warehouse)
    bumped_at = time.monotonic()
    while versions.get() == before:
        assert time.monotonic() - bumped_at < 1.5, "the bump stayed invisible past the TTL"
        time.sleep(0.02)
    assert time.monotonic() - bumped_at <= 1.1
    assert versions.get() == before + 1
    assert call() == {"calls": 2} and compute.calls == 2
    assert cache.stats() == {"hits": 50, "misses": 2, "computations": 2, "waits": 0}


def test_version_source_is_thread_safe_and_cheap(cache_warehouse):
    versions = VersionSource(cache_warehouse.connect, ttl=60)
    results = together(20, lambda _: versions.get())
    assert len(set(results)) == 1 and versions.reads == 1
    bump(cache_warehouse)
    versions.invalidate()
    assert versions.get() == results[0] + 1


# --- Redis --------------------------------------------------------------------------------------


def test_redis_concurrent_misses_across_two_caches_compute_once(redis_client, namespace):
    caches = [redis_cache(redis_client, namespace), redis_cache(redis_client, namespace)]
    compute = SlowCompute(value={"ok": True})
    results = together(20, lambda i: caches[i % 2].get_or_compute("k", compute))
    assert compute.calls == 1 and results == [{"ok": True}] * 20
    stats = [c.stats() for c in caches]
    assert sum(s["computations"] for s in stats) == 1
    assert sum(s["misses"] for s in stats) == 20
    assert caches[0].get_or_compute("k", compute) == {"ok": True}
    assert caches[0].stats()["hits"] == 1
    assert 0 < redis_client.pttl(namespace + "k") <= 300_000  # stored with a TTL
    assert redis_client.get(namespace + "lock:k") is None  # the lock was released


CHILD = """
import json, os, sys, threading, time
import redis
from prodplan_pipeline.serving.cache import RedisCache
url, namespace = sys.argv[1], sys.argv[2]
client = redis.Redis.from_url(url)
cache = RedisCache(client, namespace=namespace)
def compute():
    client.incr(namespace + "computed")
    time.sleep(1.0)
    return {"pid": os.getpid()}
client.incr(namespace + "ready")
deadline = time.monotonic() + 30
while not client.exists(namespace + "go") and time.monotonic() < deadline:
    time.sleep(0.005)
results = []
threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute("k", compute)))
           for _ in range(5)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps({"results": results, "stats": cache.stats()}))
"""


def test_redis_singleflight_across_real_processes(redis_client, redis_url, namespace):
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, redis_url, namespace],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    deadline = time.monotonic() + 30
    while int(redis_client.get(namespace + "ready") or 0) < len(children):
        assert time.monotonic() < deadline, "the child processes did not start"
        time.sleep(0.02)
    redis_client.set(namespace + "go", 1)
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=30)
        assert child.returncode == 0, err
        outputs.append(json.loads(out))
    assert int(redis_client.get(namespace + "computed")) == 1
    values = [r for out in outputs for r in out["results"]]
    assert len(values) == 15 and len({json.dumps(v) for v in values}) == 1
    assert sum(out["stats"]["computations"] for out in outputs) == 1


def test_redis_dead_lock_holder_is_outlived_not_waited_on_forever(redis_client, namespace):
    # A holder that took the lock and died: the lock only goes away by expiry.
    redis_client.set(namespace + "lock:k", "dead-holder", px=600)
    caches = [redis_cache(redis_client, namespace, lock_ms=600), redis_cache(redis_client, namespace, lock_ms=600)]
    compute = SlowCompute(seconds=0.1, value="recomputed")
    started = time.monotonic()
    results = together(6, lambda i: caches[i % 2].get_or_compute("k", compute))
    elapsed = time.monotonic() - started
    assert results == ["recomputed"] * 6 and compute.calls == 1
    assert 0.5 <= elapsed < 3.0


def test_redis_slow_live_holder_bounds_the_wait(redis_client, namespace):
    # A lock renewed for longer than max_wait: the caller computes itself rather than hang.
    redis_client.set(namespace + "lock:k", "slow-holder", px=60_000)
    cache = redis_cache(redis_client, namespace, max_wait=0.5)
    started = time.monotonic()
    assert cache.get_or_compute("k", lambda: 42) == 42
    assert 0.5 <= time.monotonic() - started < 2.0


def test_redis_failure_reaches_every_waiter_and_is_not_cached(redis_client, namespace):
    caches = [redis_cache(redis_client, namespace), redis_cache(redis_client, namespace)]
    failing = SlowCompute(seconds=0.4, error=ValueError("boom"))
    results = together(10, lambda i: caches[i % 2].get_or_compute("k", failing))
    assert failing.calls == 1
    # The leader's process sees the exception itself; the other process learns of it via Redis.
    assert all(isinstance(r, (ValueError, ComputeFailed)) and "boom" in str(r) for r in results)
    assert any(isinstance(r, ComputeFailed) for r in results)
    assert redis_client.get(namespace + "k") is None
    assert caches[1].get_or_compute("k", lambda: "fresh") == "fresh"
