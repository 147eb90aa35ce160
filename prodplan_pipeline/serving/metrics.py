"""Prometheus metrics for ``GET /metrics``: requests by route and status, latency histograms and
the cache's hits, misses and waits, summed over every worker of ``prodplan serve --workers N``.

Workers are separate processes, so a scrape answered by one of them must see the others' counts:
with ``PROMETHEUS_MULTIPROC_DIR`` set (``prodplan serve`` sets it to a fresh folder before any
worker starts, see :func:`multiprocess_folder`), prometheus-client keeps every counter in a
memory-mapped file per process there and the scrape sums them. Without it (an app built
in-process) the counts are this process's own. The warehouse figures (cache version, time
since the last successful ingestion) are read at scrape time, not counted.

This module imports nothing of the project's, so the cache below the routes can count into it.
"""

# Deferred imports: prometheus-client must be imported after PROMETHEUS_MULTIPROC_DIR is set,
# which the server does before it builds the app.

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import perf_counter
from typing import Any

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# The cached path answers in well under a millisecond; a cold aggregate over years, seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "(unmatched)"  # a path no route takes: one label, however many such paths are asked
CACHE_EVENTS = ("hits", "misses", "waits", "computations")


@contextmanager
def multiprocess_folder() -> Iterator[str]:
    """A fresh, private folder for the workers' metric files, set in the environment the workers
    inherit (prometheus-client reads it when first imported), removed afterwards: counts never
    carry over from an earlier server."""
    folder = tempfile.mkdtemp(prefix="prodplan-metrics-")
    previous = os.environ.get(MULTIPROC_VARIABLE)
    os.environ[MULTIPROC_VARIABLE] = folder
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_VARIABLE, None)
        else:
            os.environ[MULTIPROC_VARIABLE] = previous
        shutil.rmtree(folder, ignore_errors=True)


class _Metrics:
    """The process's metric objects, created on first use: prometheus-client must be imported
    after PROMETHEUS_MULTIPROC_DIR is set, which the server does before building the app."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.multiprocess = bool(os.environ.get(MULTIPROC_VARIABLE))
        # Multiprocess values live in files and are collected from there: registered nowhere.
        self.registry = None if self.multiprocess else CollectorRegistry()
        self.requests = Counter(
            "prodplan_api_requests",
            "HTTP requests answered, by route template, method and status",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "prodplan_api_request_duration_seconds",
            "Time to answer a request, from its arrival to its last byte",
            ("route", "method"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cache = Counter(
            "prodplan_api_cache_events",
            "Versioned-cache events: hits (the front "
            "cache's included), misses, waits (a miss that waited for another "
            "caller's computation) and computations",
            ("event",),
            registry=self.registry,
        )
        self.cache_events = {event: self.cache.labels(event) for event in CACHE_EVENTS}

    def render(self, figures: dict[str, float]) -> tuple[bytes, str]:
        """The text exposition: every process's counts, and ``figures`` (WAREHOUSE_GAUGES) as gauges."""
        from prometheus_client import (
            CONTENT_TYPE_LATEST,
            CollectorRegistry,
            generate_latest,
        )
        from prometheus_client.core import GaugeMetricFamily

        counts = self.registry
        if self.multiprocess:
            from prometheus_client import multiprocess

            counts = CollectorRegistry()
            multiprocess.MultiProcessCollector(counts)
        gauges = [GaugeMetricFamily(name, WAREHOUSE_GAUGES[name], value=value) for name, value in figures.items()]
        scrape = CollectorRegistry()
        scrape.register(_Collected(lambda: [*counts.collect(), *gauges]))
        return generate_latest(scrape), CONTENT_TYPE_LATEST


class _Collected:
    def __init__(self, collect: Callable[[], list]):
        self.collect = collect


# Read at scrape time from the API's health check (at most once a second, shared with /api/health).
WAREHOUSE_GAUGES = {
    "prodplan_warehouse_reachable": "1 when the last health check reached the warehouse database, else 0",
    "prodplan_cache_version": "The warehouse's cache version: it moves with every change of served data",
    "prodplan_seconds_since_last_successful_ingestion": "Seconds since the last successful ingestion run finished",
}


_METRICS: _Metrics | None = None
_COUNTING = True  # PRODPLAN_API_METRICS=off: nothing counted (the benchmark's cost baseline)


def metrics() -> _Metrics:
    global _METRICS
    if _METRICS is None:
        _METRICS = _Metrics()
    return _METRICS


def count_in_this_process(enabled: bool) -> None:
    global _COUNTING
    _COUNTING = enabled


def count_cache_event(event: str) -> None:
    if _COUNTING:
        metrics().cache_events[event].inc()


class RequestMetrics:
    """Raw ASGI, outermost: every answer is counted, the 414s and front-cache hits answered
    before routing included. The route label is the matched route's template (one label for
    every order id), found by the router or, for answers given before routing, by ``route_of``."""

    def __init__(self, app: Any, route_of: Callable[[str], str | None]):
        self.app = app
        self.route_of = route_of
        self.metrics = metrics()
        # Bounded by routes x methods x statuses: paths are labelled by their route's template.
        self._labelled: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = perf_counter(), [500]

        async def observed(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or self.route_of(scope["path"]) or UNMATCHED
            requests, latency = self._children(template, scope["method"], status[0])
            requests.inc()
            latency.observe(perf_counter() - started)

    def _children(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        """The labelled counter and histogram, looked up once per label set (labels() locks and
        builds a key each call: a third of the per-request cost)."""
        key = (route, method, status)
        found = self._labelled.get(key)
        if found is None:
            found = self._labelled[key] = (
                self.metrics.requests.labels(route, method, str(status)),
                self.metrics.latency.labels(route, method),
            )
        return found
