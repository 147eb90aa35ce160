"""The read API (FastAPI): KPIs, quality, orders and WIP from the analytics layer, cached per
``ops.cache_version``.

Every cached endpoint goes through :meth:`Api.cached`: the key is (version, endpoint,
parameters); a hit is answered from memory on the event loop, a miss computes once per key
(singleflight) in a worker thread. A response says which version it belongs to and when that
data last changed (``cache_version``, ``as_of``), in which units its figures are, and which
ingestion runs its facts and its aggregates reflect (``snapshot``). A miss reads the version,
the labels and the body in one database snapshot, so those always agree.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from prodplan_pipeline.contract import PLAUSIBLE_FROM, PLAUSIBLE_TO
from prodplan_pipeline.quality import gates
from prodplan_pipeline.serving import cursors, problems, queries
from prodplan_pipeline.serving.cache import (
    READ_VERSION,
    NullCache,
    RedisCache,
    Version,
    VersionSource,
    build_cache,
    cache_key,
    to_json,
    version_of_row,
    version_of_text,
)
from prodplan_pipeline.serving.db import DatabaseUnavailable, ReadPool, SnapshotReader
from prodplan_pipeline.serving.docs import add_docs_routes
from prodplan_pipeline.serving.front import FrontCache, RequestLimits, cache_control, etag, not_modified
from prodplan_pipeline.serving.launcher import IngestionLauncher, LaunchRefused, check_api_key
from prodplan_pipeline.serving.metrics import RequestMetrics, count_in_this_process, metrics
from prodplan_pipeline.serving.notify import VersionListener
from prodplan_pipeline.settings import Settings
from prodplan_pipeline.warehouse import Warehouse
from prodplan_pipeline.warehouse.connection import libpq_dsn

# Endpoints answered NOT_SUPPORTED_BY_DATA while their gate (ops.feature_gates) is off.
ENDPOINT_GATES = {
    "/api/kpis/by-employee": gates.KPIS_BY_EMPLOYEE.feature,
    "/api/kpis/by-phase": gates.PHASES_BY_ORDER.feature,
    "/api/quality/by-phase": gates.QUALITY_BY_PHASE_TIMING.feature,
    "/api/quality/by-product": gates.QUALITY_BY_ORDER.feature,
}
# by-product always answers per product; the attributes (weights, gelcoat) only with this gate on.
ATTRIBUTES_GATE = gates.KPIS_BY_PRODUCT_ATTRIBUTES.feature
UNITS = {
    "durations": "seconds",
    "ages": "seconds",
    "lead_times": "seconds",
    "weights": "kg",
    "rates": "ratio 0..1",
    "timestamps": "factory local time, ISO 8601",
    "as_of": "UTC, ISO 8601",
}
MAX_PAGE = 500
HEALTH_TTL = 1.0  # seconds a health check is reused

# What an endpoint computes: its body (None: not found) from reads in one database snapshot.
Compute = Callable[[SnapshotReader], Any]

# Every integer parameter is range-checked here and in the schema (422 naming it): an id
# PostgreSQL cannot take (int4) would otherwise surface as a 500. Days take any valid date.
INT4_MIN, INT4_MAX = -(2**31), 2**31 - 1
FIRST_DAY, LAST_DAY = PLAUSIBLE_FROM.date(), PLAUSIBLE_TO.date() - timedelta(days=1)


def _within_window(day: date | None) -> date | None:
    """A day clamped to the contract's plausible window: no fact lies outside it, so an earlier
    `from` (or a later `to`) selects exactly what the window's edge does, as the schema's plain
    `date` promises; and `created_to + 1 day` stays a date PostgreSQL and Python can compute."""
    return None if day is None else min(max(day, FIRST_DAY), LAST_DAY)


WINDOW = f"; any date: the facts lie within {FIRST_DAY}..{LAST_DAY}, so a day beyond counts as that edge"
ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_day(value: Any) -> Any:
    """Only YYYY-MM-DD, as the schema's `format: date` says: pydantic alone also takes a count
    of seconds since 1970 (``?to=0`` would be 1970-01-01)."""
    if isinstance(value, str) and not ISO_DAY.fullmatch(value):
        raise ValueError(f"{value!r} is not a day written YYYY-MM-DD")
    return value


def day_parameter(description: str, alias: str | None = None):
    """An optional day in the query (the validator must sit in the annotation, beside Query)."""
    return Annotated[date | None, BeforeValidator(_iso_day), Query(alias=alias, description=description + WINDOW)]


OrderId = Path(..., ge=INT4_MIN, le=INT4_MAX, description="Of_Id")
FromDate = day_parameter("first day, inclusive (YYYY-MM-DD)", alias="from")
ToDate = day_parameter("last day, inclusive (YYYY-MM-DD)", alias="to")
CreatedFrom = day_parameter("created on or after this day")
CreatedTo = day_parameter("created on or before this day")


class IngestionRequest(BaseModel):
    force: bool = False  # re-read and re-merge sheets whose content is unchanged


class SnapshotLabels(BaseModel):
    """The ingestion runs a response reflects: per-order facts are read from core, KPIs and
    quality figures from aggregates that may still be catching up with core."""

    facts_run_id: int = Field(
        description="the last ingestion run that changed core (orders, phases, defects); 0 before any"
    )
    aggregates_run_id: int = Field(
        description="the ingestion run the least caught-up analytics layer (or the feature gates) reflects; "
        "0 until every layer has one"
    )
    catching_up: bool = Field(description="aggregates_run_id < facts_run_id")
    note: str | None = Field(description="one sentence saying so while catching up, else null")


class Envelope(BaseModel):
    """What every data response carries besides its endpoint's own fields (documentation only:
    the bodies are built as JSON text and cached)."""

    model_config = ConfigDict(extra="allow")
    cache_version: int
    as_of: datetime | None = Field(description="when the served data last changed (UTC)")
    units: dict[str, str]
    snapshot: SnapshotLabels


# Every status an operation answers is declared with its body (errors: problems.py).
ERRORS = {status: problems.schema(status) for status in (414, 422, 503)}
DATA = {
    200: {"model": Envelope, "description": "the endpoint's fields, in the shared envelope"},
    304: {"description": "Not modified: If-None-Match names the current answer's ETag (no body)"},
    **ERRORS,
}
ONE_ORDER = {**DATA, 404: problems.schema(404)}


def _in_order(first: date | None, last: date | None, names: tuple[str, str]) -> None:
    """422 (in the validation errors' format) for a window that ends before it starts: it can
    select nothing, so it is a client's mistake rather than a question with an empty answer."""
    if first is not None and last is not None and first > last:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", names[0]),
                    "msg": f"{first} is after {names[1]} {last}",
                    "input": str(first),
                }
            ]
        )


def _period(start: date | None, end: date | None) -> queries.Period:
    _in_order(start, end, ("from", "to"))
    return queries.Period(_within_window(start), _within_window(end))


def _unknown_parameters(request: Request, accepted) -> JSONResponse | None:
    """422 for a misspelt parameter (``?limt=5``) instead of silently ignoring it."""
    unknown = sorted(set(request.query_params) - set(accepted))
    if not unknown:
        return None
    return problems.response(
        422,
        f"unknown query parameter(s) {', '.join(unknown)}; this endpoint takes {', '.join(sorted(accepted)) or 'none'}",
    )


class Api:
    """The app's state: read pool, version source, cache and ingestion launcher."""

    def __init__(self, settings: Settings, database_url):
        self.settings = settings
        # Fixed sizes, no overflow: an overflow connection is closed as soon as the pool is idle
        # again, and each new one pays its PREPAREs and ~80 partitions of catalogue lookups.
        self.db = ReadPool(database_url, pool_size=10, max_overflow=0, prepared=queries.PREPARED)
        # The version and health reads get connections of their own: they must not queue behind
        # a burst of cache misses holding every connection of the main pool.
        self.control = ReadPool(database_url, pool_size=2, max_overflow=0)
        self.versions = VersionSource(self.control.connect, ttl=settings.cache_version_ttl)
        self._control_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="control")
        # A committed bump reaches this process as a NOTIFY; the TTL above is the fallback.
        self.listener = VersionListener(libpq_dsn(self.db.url), self.versions.invalidate).start()
        self.cache = build_cache(settings, namespace=self._namespace())
        self.launcher = IngestionLauncher(settings)
        self.cache_control = cache_control(settings.cache_version_ttl)
        self._health: tuple[float, tuple | None] = (0.0, None)
        self._health_lock = asyncio.Lock()

    def _namespace(self) -> str:
        """Redis keys per database *instance*: a warehouse dropped and created again restarts its
        versions at 0, and must not be served the old one's entries (its oid is new)."""
        found = self.control.row(
            "SELECT current_database() AS name, oid FROM pg_database WHERE datname = current_database()"
        )
        return f"prodplan:cache:{found['name']}:{found['oid']}:"

    async def version(self) -> Version:
        return self.versions.peek() or await self.in_control_thread(self.versions.current)

    async def health_check(self) -> tuple[str, dict | None, str | None]:
        """(checked_at, state, error): the database asked at most once per HEALTH_TTL; concurrent
        callers share one check."""
        async with self._health_lock:
            checked, result = self._health
            if result is None or time.monotonic() - checked >= HEALTH_TTL:
                try:
                    state, error = await self.in_control_thread(queries.health, self.control), None
                except DatabaseUnavailable as unreachable:
                    state, error = None, str(unreachable)
                now = datetime.now(UTC).isoformat(timespec="milliseconds")
                self._health = checked, result = time.monotonic(), (now, state, error)
            return result

    async def in_control_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run on the two control threads: not behind misses queued for the main thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self._control_threads, function, *args)

    async def cached(
        self, request: Request, endpoint: str, params: dict[str, Any], compute: Compute, not_found: str | None = None
    ) -> Response:
        refusal = _unknown_parameters(request, params)
        if refusal is not None:
            return refusal
        version = await self.version()
        key = cache_key(version.number, endpoint, params)
        text, how = self.cache.peek(key), "hit"
        if text is None:
            how = "miss"
            text = await run_in_threadpool(
                self.cache.get_or_compute_json, key, lambda: self.db.in_snapshot(self._body(compute))
            )
        # The body's own version: later than the key's when a bump committed before the miss
        # read the database (the key's version is the oldest its body can be from).
        served = version_of_text(text) or version.number
        headers = {"X-Cache": how, "X-Cache-Version": str(served)}
        if text == "null":
            return problems.response(404, not_found, headers=headers)
        tag = etag(served, request.scope["path"], request.scope["query_string"])
        headers |= {"ETag": tag, "Cache-Control": self.cache_control}
        if not_modified(request.headers.get("if-none-match"), tag):
            return Response(status_code=304, headers=headers)
        return Response(text, media_type="application/json", headers=headers)

    def gated(self, endpoint: str, compute: Compute) -> Compute:
        """``compute`` behind its endpoint's gate: the refusal (HTTP 200) while the gate is off."""

        def run(db: SnapshotReader):
            return queries.gate_refusal(db, ENDPOINT_GATES[endpoint]) or compute(db)

        return run

    @staticmethod
    def _body(compute: Compute) -> Compute:
        """``compute``'s body in its envelope, labelled with the version of the body's own snapshot.
        The version is read first, so the figures after it can be of no other version; the
        version this process last heard of may be older by a commit whose NOTIFY is still on its
        way, and labelling the body with that one would call new figures old."""

        def run(db: SnapshotReader) -> dict | None:
            version = version_of_row(db.row(READ_VERSION))
            body = compute(db)
            if body is None:
                return None
            return {
                "cache_version": version.number,
                "as_of": version.as_of,
                "units": UNITS,
                "snapshot": version.snapshot.as_json(),
                **body,
            }

        return run


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for ``prodplan serve`` (uvicorn calls this factory once per worker process)."""
    settings = settings or Settings.from_env()
    warehouse = Warehouse.from_settings(settings)  # applies pending migrations, starts pgserver
    # Threads computing misses and the event loop serving hits trade the interpreter every
    # 0.5 ms instead of 5: measured under load, p95 and req/s both improve.
    sys.setswitchinterval(0.0005)
    api = Api(settings, warehouse.url)
    app = FastAPI(
        title="ProdPlan API",
        version="1.0",
        description="Production KPIs of the Folha_IA warehouse. Figures come from the "
        "analytics layer; responses carry their cache version, as-of time and "
        "the ingestion runs their facts and aggregates reflect (snapshot).",
        docs_url=None,
        redoc_url=None,
    )  # /docs is served offline by add_docs_routes
    app.state.api = api
    if not isinstance(api.cache, NullCache):  # the benchmark's uncached baseline must stay uncached
        app.add_middleware(FrontCache, api=api)
    app.add_middleware(RequestLimits)  # before the front cache
    count_in_this_process(settings.api_metrics)
    if settings.api_metrics:
        app.add_middleware(RequestMetrics, route_of=_route_finder(app))  # added last, so outermost
    _install_error_handlers(app)
    _add_kpi_routes(app, api)
    _add_quality_routes(app, api)
    _add_planner_routes(app, api)  # before the orders: /orders/at-risk is not an order id
    _add_order_routes(app, api)
    _add_ops_routes(app, api)
    add_docs_routes(app)
    return app


def _route_finder(app: FastAPI) -> Callable[[str], str | None]:
    """The template of the route that takes a path, for answers given before routing (the
    front cache's, a 414): the metrics label them as the router would have."""

    @functools.lru_cache(maxsize=4096)
    def route_of(path: str) -> str | None:
        scope = {"type": "http", "method": "GET", "path": path, "root_path": ""}
        return next((route.path for route in app.router.routes if route.matches(scope)[0] is Match.FULL), None)

    return route_of


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def bad_parameters(request: Request, exc: RequestValidationError):
        named = [f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in exc.errors()]
        # A validator's own ValueError sits in the errors' ctx: as its message, JSON can carry it.
        return problems.response(
            422, "; ".join(named), errors=jsonable_encoder(exc.errors(), custom_encoder={Exception: str})
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        # Starlette's own answers (an unknown path, a method a route does not take)
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return problems.response(
            exc.status_code, f"{request.method} {request.url.path}: {detail}", headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(cursors.BadCursor)
    async def bad_cursor(request: Request, exc: cursors.BadCursor):
        return problems.response(422, f"cursor: {exc}")

    @app.exception_handler(DatabaseUnavailable)
    async def database_down(request: Request, exc: DatabaseUnavailable):
        return problems.response(503, f"the warehouse database is unreachable: {exc}")


def _add_kpi_routes(app: FastAPI, api: Api) -> None:
    @app.get("/api/kpis/overview", tags=["kpis"], responses=DATA)
    async def kpis_overview(request: Request, start: FromDate = None, end: ToDate = None):
        """Orders finished (lead time, on-time rate), phases finished (duration, rework), defects and
        current WIP, over all days or the period from..to (query parameters)."""
        period = _period(start, end)
        return await api.cached(
            request, "kpis/overview", {"from": start, "to": end}, lambda db: queries.overview(db, period)
        )

    @app.get("/api/kpis/by-phase", tags=["kpis"], responses=DATA)
    async def kpis_by_phase(request: Request, start: FromDate = None, end: ToDate = None):
        """Per phase: finished phases, mean/min/max duration, rework share, open phases now."""
        period = _period(start, end)
        return await api.cached(
            request,
            "kpis/by-phase",
            {"from": start, "to": end},
            api.gated("/api/kpis/by-phase", lambda db: queries.by_phase(db, period)),
        )

    @app.get("/api/kpis/by-product", tags=["kpis"], responses=DATA)
    async def kpis_by_product(request: Request, start: FromDate = None, end: ToDate = None):
        """Per product: orders finished, lead time, on-time rate, phase durations; with the product's
        attributes (kg) when the kpis_by_product_attributes gate is on."""
        period = _period(start, end)

        def compute(db: SnapshotReader):
            refusal = queries.gate_refusal(db, ATTRIBUTES_GATE)
            body = queries.by_product(db, period, with_attributes=refusal is None)
            return {**body, "product_attributes": refusal or {"status": "SUPPORTED"}}

        return await api.cached(request, "kpis/by-product", {"from": start, "to": end}, compute)

    @app.get("/api/kpis/by-employee", tags=["kpis"], responses=DATA)
    async def kpis_by_employee(request: Request):
        """Per employee: phases worked (as chief), their durations and rework. Answers
        NOT_SUPPORTED_BY_DATA while too few employee links match a phase row."""
        return await api.cached(
            request, "kpis/by-employee", {}, api.gated("/api/kpis/by-employee", lambda db: queries.by_employee(db))
        )


def _add_quality_routes(app: FastAPI, api: Api) -> None:
    @app.get("/api/quality/overview", tags=["quality"], responses=DATA)
    async def quality_overview(request: Request, start: FromDate = None, end: ToDate = None):
        """Defects in total and by severity, and defects per finished order."""
        period = _period(start, end)
        return await api.cached(
            request, "quality/overview", {"from": start, "to": end}, lambda db: queries.quality_overview(db, period)
        )

    @app.get("/api/quality/by-phase", tags=["quality"], responses=DATA)
    async def quality_by_phase(request: Request, start: FromDate = None, end: ToDate = None):
        """Defects per inspection phase, by severity."""
        period = _period(start, end)
        return await api.cached(
            request,
            "quality/by-phase",
            {"from": start, "to": end},
            api.gated("/api/quality/by-phase", lambda db: queries.quality_by_phase(db, period)),
        )

    @app.get("/api/quality/by-product", tags=["quality"], responses=DATA)
    async def quality_by_product(request: Request, start: FromDate = None, end: ToDate = None):
        """Defects per product, by severity, and per finished order."""
        period = _period(start, end)
        return await api.cached(
            request,
            "quality/by-product",
            {"from": start, "to": end},
            api.gated("/api/quality/by-product", lambda db: queries.quality_by_product(db, period)),
        )


def _planner(compute: Compute) -> Compute:
    """A planner body with its own units besides the shared ones."""
    return lambda db: {**compute(db), "units": {**UNITS, **queries.PLANNER_UNITS}}


def _add_planner_routes(app: FastAPI, api: Api) -> None:
    @app.get("/api/kpis/bottlenecks", tags=["planner"], responses=DATA)
    async def bottlenecks(request: Request):
        """Per phase, as of the snapshot's data_as_of (its newest plausible phase start or end):
        wip = phase rows started and not finished; throughput_per_day = phase rows finished in
        the 30 days up to data_as_of, / 30; expected_wait_days = wip / throughput_per_day
        (Little's law; null when nothing finished); p90_wip_age_seconds. Highest wait first."""
        return await api.cached(request, "kpis/bottlenecks", {}, _planner(queries.bottlenecks))

    @app.get("/api/quality/pareto", tags=["planner"], responses=DATA)
    async def quality_pareto(
        request: Request,
        by: Literal["description", "culprit_phase", "product"] = Query(
            ..., description="what the defects are counted by"
        ),
        start: FromDate = None,
        end: ToDate = None,
    ):
        """Defects counted by description, culprit phase (the phase of the phase row
        Erro_FaseOfCulpada names) or product (the order's), highest count first, each with its
        share of all defects counted and the cumulative share. Defects whose key is unknown form
        one item "unknown" with the reasons. With from/to: by the day of ofch_event_time."""
        _in_order(start, end, ("from", "to"))
        return await api.cached(
            request,
            "quality/pareto",
            {"by": by, "from": start, "to": end},
            _planner(lambda db: queries.defect_pareto(db, by, _period(start, end))),
        )

    @app.get("/api/prodplan/orders/at-risk", tags=["planner"], responses=DATA)
    async def orders_at_risk(
        request: Request,
        cursor: str | None = Query(None, description="next_cursor of the previous page"),
        limit: int = Query(100, ge=1, le=MAX_PAGE),
    ):
        """Open orders with a due date, least slack first: eta = data_as_of + the expected time
        of the remaining standard-route phases (median duration of that product and phase over
        the year up to data_as_of, else of the phase over all products); slack_seconds = due -
        eta. Orders that cannot be assessed are counted per reason (unassessed), with the share
        assessed. Keyset pagination: pass next_cursor back as cursor."""
        after = cursors.decode(cursor, queries.AT_RISK_CURSOR_SCOPE, (0, INT4_MAX)) if cursor else None
        return await api.cached(
            request,
            "prodplan/orders-at-risk",
            {"cursor": cursor, "limit": limit},
            _planner(lambda db: queries.orders_at_risk(db, after, limit)),
        )


def _add_order_routes(app: FastAPI, api: Api) -> None:
    @app.get("/api/prodplan/orders", tags=["orders"], responses=DATA)
    async def orders(
        request: Request,
        product: int | None = Query(None, ge=INT4_MIN, le=INT4_MAX, description="Of_ProdutoId"),
        phase: int | None = Query(None, ge=INT4_MIN, le=INT4_MAX, description="the order's current phase (Of_FaseId)"),
        status: Literal["open", "finished", "on_time", "late"] | None = Query(None),
        created_from: CreatedFrom = None,
        created_to: CreatedTo = None,
        cursor: str | None = Query(None, description="next_cursor of the previous page"),
        limit: int = Query(100, ge=1, le=MAX_PAGE),
    ):
        """Orders in of_id order, a page at a time (keyset pagination: pass the page's next_cursor
        back as cursor, with the same filters)."""
        _in_order(created_from, created_to, ("created_from", "created_to"))
        filters = queries.OrderFilters(product, phase, status, _within_window(created_from), _within_window(created_to))
        # A bad cursor is a 422, before any caching.
        after = cursors.decode(cursor, filters.as_dict(), (INT4_MIN, INT4_MAX)) if cursor else None
        params = {**filters.as_dict(), "cursor": cursor, "limit": limit}
        return await api.cached(
            request, "prodplan/orders", params, lambda db: queries.orders_page(db, filters, after, limit)
        )

    @app.get("/api/prodplan/orders/{of_id}", tags=["orders"], responses=ONE_ORDER)
    async def order(request: Request, of_id: int = OrderId):
        """One order with its product, phase and defect counts; 404 when the id is unknown."""
        return await api.cached(
            request,
            "prodplan/order",
            {"of_id": of_id},
            lambda db: queries.order(db, of_id),
            not_found=f"order {of_id} not found",
        )

    @app.get("/api/prodplan/orders/{of_id}/phases", tags=["orders"], responses=ONE_ORDER)
    async def order_phases(request: Request, of_id: int = OrderId):
        """The order's phase rows in sequence; 404 when the order is unknown."""
        return await api.cached(
            request,
            "prodplan/order-phases",
            {"of_id": of_id},
            lambda db: queries.order_phases(db, of_id),
            not_found=f"order {of_id} not found",
        )

    @app.get("/api/prodplan/schedule/current", tags=["orders"], responses=DATA)
    async def schedule_current(request: Request):
        """Work in progress now: open phases and orders per phase, with the oldest one's age."""
        return await api.cached(request, "prodplan/schedule", {}, lambda db: queries.schedule_current(db))


def _add_ops_routes(app: FastAPI, api: Api) -> None:
    @app.get("/api/features", tags=["operations"], responses=DATA)
    async def features(request: Request):
        """Every feature gate: status, match rate, threshold, reason and the endpoints it switches."""
        by_feature: dict[str, list[str]] = {}
        for endpoint, feature in {**ENDPOINT_GATES, "/api/kpis/by-product (attributes)": ATTRIBUTES_GATE}.items():
            by_feature.setdefault(feature, []).append(endpoint)
        return await api.cached(request, "features", {}, lambda db: queries.features(db, by_feature))

    @app.get(
        "/api/health",
        tags=["operations"],
        responses={
            414: problems.schema(414),
            503: {"description": "the warehouse database cannot be reached: status unavailable"},
        },
    )
    async def health():
        """Database reachability, last successful ingestion, cache version, snapshot labels and
        gates; 503 when the database cannot be reached. Checked at most once a second
        (checked_at), however often monitors ask; not part of the versioned cache."""
        checked_at, state, error = await api.health_check()
        if error is not None:
            return JSONResponse(
                {"status": "unavailable", "checked_at": checked_at, "database": {"reachable": False, "error": error}},
                status_code=503,
            )
        return Response(
            to_json(
                {
                    "status": "ok",
                    "checked_at": checked_at,
                    "database": {"reachable": True},
                    **state,
                    "cache": _cache_summary(api),
                }
            ),
            media_type="application/json",
        )

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus' text format: requests by route, method and status, "
                "latency histograms and cache events summed over every worker; the "
                "warehouse's reachability, cache version and seconds since the last "
                "successful ingestion",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            404: problems.schema(404),
            414: problems.schema(414),
        },
    )
    async def prometheus_metrics():
        """For Prometheus to scrape (see the README's scrape config); not cached. 404 with
        PRODPLAN_API_METRICS=off."""
        if not api.settings.api_metrics:
            return problems.response(404, "GET /metrics: metrics are off (PRODPLAN_API_METRICS=off)")
        figures = await _warehouse_figures(api)
        body, content_type = metrics().render(figures)
        return Response(body, media_type=content_type)

    @app.get("/api/cache/stats", tags=["operations"])
    async def cache_stats():
        """This process's cache counters, and how often each recent key was computed."""
        return {**_cache_summary(api), "computations_by_key": api.cache.computations_by_key()}

    @app.get("/api/ingestion/runs", tags=["operations"], responses=ERRORS)
    async def ingestion_runs(request: Request, cursor: str | None = Query(None), limit: int = Query(20, ge=1, le=100)):
        """Ingestion runs, newest first, with per-sheet counts. Not cached: a running ingestion
        changes its row before the cache version moves."""
        refusal = _unknown_parameters(request, ("cursor", "limit"))
        if refusal is not None:
            return refusal
        before = cursors.decode(cursor, queries.RUNS_CURSOR_SCOPE) if cursor else None
        page = await run_in_threadpool(queries.ingestion_runs, api.db, before, limit)
        return Response(to_json(page), media_type="application/json")

    @app.post(
        "/api/ingestion/run",
        status_code=202,
        tags=["operations"],
        responses={**ERRORS, **{status: problems.schema(status) for status in (400, 401, 403, 409)}},
    )
    async def run_ingestion(body: IngestionRequest | None = Body(None), x_api_key: str | None = Header(None)):
        """Start an ingestion of the server's workbook (needs the X-API-Key header). Follow it
        with GET /api/ingestion/runs."""
        try:
            check_api_key(api.settings, x_api_key)
            launch = api.launcher.launch(force=bool(body and body.force))
        except LaunchRefused as refused:
            return problems.response(refused.status, str(refused))
        return JSONResponse(
            {
                "status": "started",
                "pid": launch.pid,
                "workbook": str(launch.workbook),
                "force": launch.forced,
                "log": str(launch.log),
            },
            status_code=202,
        )


async def _warehouse_figures(api: Api) -> dict[str, float]:
    """The gauges /metrics reads from the (shared, once-a-second) health check."""
    _, state, error = await api.health_check()
    figures = {"prodplan_warehouse_reachable": 0.0 if error else 1.0}
    if state:
        figures["prodplan_cache_version"] = float(state["cache_version"])
        last = state.get("last_successful_ingestion")
        if last is not None:
            figures["prodplan_seconds_since_last_successful_ingestion"] = (datetime.now(UTC) - last).total_seconds()
    return figures


def _cache_summary(api: Api) -> dict:
    backend = {RedisCache: "redis", NullCache: "off"}.get(type(api.cache), "in-process")
    return {"backend": backend, "pid": os.getpid(), **api.cache.stats()}
