"""The read API over real HTTP: a `prodplan serve` process on a free port, a real PostgreSQL.

Values are checked against SQL written here, over the core tables (not the aggregates the API
reads), on the shared real sample; per-employee KPIs also on a generated workbook whose employee
links match (gate on). Cache behaviour (version bump, singleflight in-process and over Redis),
the API key and a stopped database are exercised through the same HTTP interface.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest

from prodplan_pipeline.analytics.aggregates import ORDER_STATS, refresh
from prodplan_pipeline.analytics.convergence import LABELLED
from prodplan_pipeline.analytics.rebuild import rebuild_downstream
from prodplan_pipeline.analytics.views import refresh_views
from prodplan_pipeline.ingest.pipeline import ingest_workbook
from prodplan_pipeline.serving import cursors, queries
from prodplan_pipeline.serving.cache import InProcessCache, cache_key, entry_bytes
from prodplan_pipeline.serving.front import MAX_QUERY, FrontCache
from prodplan_pipeline.warehouse.cache_version import bump_cache_version
from prodplan_pipeline.warehouse.embedded import embedded_server_uri, stop_embedded_server
from prodplan_pipeline.workbook.sample import write_sample

from .api_helpers import approx, ok, sql, together, url_of
from .api_server import ApiServer, server_env
from .conftest import REPO_ROOT, run_cli
from .workbook_edit import edited
from .workbook_facts import FACT_OF_GATE

API_KEY = "test-key-0123456789abcdef"
PERIOD = (date(2023, 3, 1), date(2023, 3, 31))


@pytest.fixture(scope="module")
def real(databases, real_sample, tmp_path_factory):
    """The real sample (or its generated stand-in), fully built, behind a server with writes enabled."""
    warehouse = databases.warehouse("api_real")
    assert ingest_workbook(warehouse, real_sample.path).passed
    rebuild_downstream(warehouse)
    server = ApiServer(server_env(tmp_path_factory.mktemp("api_real"), url_of(warehouse)), fresh=True)
    yield warehouse, server
    server.stop()


@pytest.fixture(scope="module")
def synthetic(databases, tmp_path_factory):
    """A generated workbook whose employee links match (95%), with writes enabled."""
    home = tmp_path_factory.mktemp("api_synthetic")
    workbook = home / "Folha_IA.xlsx"
    write_sample(workbook, scale=0.03, seed=11, link_match_rate=0.95)
    warehouse = databases.warehouse("api_synthetic")
    assert ingest_workbook(warehouse, workbook).passed
    rebuild_downstream(warehouse)
    dagster = databases.dagster_storage("api_dagster")
    # A version TTL of a minute: a committed refresh can only be seen within seconds by NOTIFY.
    env = server_env(
        home,
        url_of(warehouse),
        PRODPLAN_API_KEY=API_KEY,
        PRODPLAN_WORKBOOK=str(workbook),
        PRODPLAN_DAGSTER_DATABASE=dagster.database,
        PRODPLAN_CACHE_VERSION_TTL="60",
    )
    server = ApiServer(env)
    yield warehouse, server, env
    server.stop()


# --- values against independent SQL on the real sample ------------------------------------------

FINISHED_ORDERS = """
    SELECT count(*) AS n, avg(lead_time_seconds) AS mean_lead, count(*) FILTER (WHERE is_on_time) AS on_time,
           count(*) FILTER (WHERE NOT is_on_time) AS late, count(*) FILTER (WHERE of_data_transporte IS NULL) AS no_due
    FROM core.ordens_fabrico WHERE of_data_acabamento::date BETWEEN %(start)s AND %(end)s"""
FINISHED_PHASES = """
    SELECT count(*) AS n, avg(f.duration_seconds) AS mean, count(*) FILTER (WHERE f.fase_of_retorno = 1) AS rework
    FROM core.fases_ordem_fabrico f JOIN core.ordens_fabrico o ON o.of_id = f.fase_of_of_id
    WHERE f.duration_seconds IS NOT NULL AND f.event_time::date BETWEEN %(start)s AND %(end)s"""
DEFECTS = """
    SELECT count(*) AS n FROM core.erros_ordem_fabrico e JOIN core.ordens_fabrico o ON o.of_id = e.erro_of_id
    WHERE e.ofch_event_time::date BETWEEN %(start)s AND %(end)s"""
OPEN_PHASES = """
    SELECT count(*) AS n FROM core.fases_ordem_fabrico f JOIN core.ordens_fabrico o ON o.of_id = f.fase_of_of_id
    WHERE f.fase_of_fim IS NULL"""
EVERY_DAY = {"start": date(1, 1, 1), "end": date(9999, 12, 31)}


@pytest.mark.parametrize("period", [None, PERIOD], ids=["all-days", "one-month"])
def test_kpis_overview_equals_sql_over_core(real, period):
    warehouse, server = real
    bounds = {"start": period[0], "end": period[1]} if period else EVERY_DAY
    query = {"from": period[0].isoformat(), "to": period[1].isoformat()} if period else {}
    body = ok(server.get("/api/kpis/overview", params=query))
    (orders,) = sql(warehouse, FINISHED_ORDERS, bounds)
    (phases,) = sql(warehouse, FINISHED_PHASES, bounds)
    assert orders["n"] > 0 and phases["n"] > 0
    assert body["orders"]["finished"] == orders["n"]
    assert body["orders"]["mean_lead_time_seconds"] == approx(orders["mean_lead"])
    assert (body["orders"]["on_time"], body["orders"]["late"], body["orders"]["no_due_date"]) == (
        orders["on_time"],
        orders["late"],
        orders["no_due"],
    )
    assert body["phases"]["finished"] == phases["n"] and body["phases"]["rework"] == phases["rework"]
    assert body["phases"]["mean_duration_seconds"] == approx(float(phases["mean"]))
    assert body["quality"]["defects"] == sql(warehouse, DEFECTS, bounds)[0]["n"]
    assert body["wip"]["open_phases"] == sql(warehouse, OPEN_PHASES)[0]["n"]
    assert body["units"]["durations"] == "seconds" and body["as_of"] and body["cache_version"] >= 1
    assert body["period"] == ({"from": query["from"], "to": query["to"]} if period else {"from": None, "to": None})


def test_kpis_by_phase_equals_sql_over_core(real):
    warehouse, server = real
    body = ok(server.get("/api/kpis/by-phase"))
    expected = {
        r["fase_id"]: r
        for r in sql(
            warehouse,
            """
        SELECT f.fase_of_fase_id AS fase_id, count(*) AS n, avg(f.duration_seconds) AS mean,
               min(f.duration_seconds) AS min, max(f.duration_seconds) AS max,
               count(*) FILTER (WHERE f.fase_of_retorno = 1) AS rework
        FROM core.fases_ordem_fabrico f JOIN core.ordens_fabrico o ON o.of_id = f.fase_of_of_id
        WHERE f.duration_seconds IS NOT NULL GROUP BY 1""",
        )
    }
    got = {i["fase_id"]: i for i in body["items"]}
    assert got.keys() == expected.keys() and len(got) > 5
    for fase_id, e in expected.items():
        item = got[fase_id]
        assert (item["n_finished"], item["n_rework"]) == (e["n"], e["rework"])
        assert item["mean_duration_seconds"] == approx(e["mean"])
        assert (item["min_duration_seconds"], item["max_duration_seconds"]) == (e["min"], e["max"])
    assert body["next_cursor"] is None


def test_kpis_by_product_equals_sql_and_carries_attributes_when_supported(real, real_sample):
    """The attributes follow the product gate: the real sample knows 94.9% of its products, the
    generated workbook ~72%, so between them both answers are tested."""
    warehouse, server = real
    body = ok(server.get("/api/kpis/by-product"))
    rate = real_sample.facts["match_rates"][FACT_OF_GATE["kpis_by_product_attributes"]]["rate"]
    supported = rate >= 0.9
    if supported:
        assert body["product_attributes"] == {"status": "SUPPORTED"}
    else:
        assert body["product_attributes"]["status"] == "NOT_SUPPORTED_BY_DATA"
        assert round(body["product_attributes"]["match_rate"], 4) == round(rate, 4)
    expected = {
        r["produto_id"]: r
        for r in sql(
            warehouse,
            """
        SELECT o.of_produto_id AS produto_id, count(*) AS n, avg(o.lead_time_seconds) AS mean_lead,
               count(*) FILTER (WHERE o.is_on_time)::float / nullif(count(o.is_on_time), 0) AS on_time_rate,
               m.produto_peso_acabamento::float AS peso
        FROM core.ordens_fabrico o LEFT JOIN core.modelos m ON m.produto_id = o.of_produto_id
        WHERE o.of_data_acabamento IS NOT NULL GROUP BY 1, m.produto_peso_acabamento""",
        )
    }
    got = {i["produto_id"]: i for i in body["items"] if i["orders_finished"]}
    assert got.keys() == expected.keys()
    for produto_id, e in expected.items():
        item = got[produto_id]
        assert item["orders_finished"] == e["n"]
        assert item["mean_lead_time_seconds"] == approx(e["mean_lead"])
        assert item["on_time_rate"] == approx(e["on_time_rate"])
        if supported:
            assert (item["attributes"] or {}).get("peso_acabamento_kg") == e["peso"]
        else:
            assert "attributes" not in item
    if supported:
        assert any(i["attributes"] is None for i in got.values())  # products missing from Modelos


def test_by_employee_is_not_supported_on_the_real_data(real, real_sample):
    _, server = real
    body = ok(server.get("/api/kpis/by-employee"))
    facts = real_sample.facts
    assert body["status"] == "NOT_SUPPORTED_BY_DATA" and body["feature"] == "kpis_by_employee"
    assert round(body["match_rate"], 4) == round(facts["match_rates"][FACT_OF_GATE["kpis_by_employee"]]["rate"], 4)
    assert body["threshold"] == 0.9 and "below the 90%" in body["reason"] and "items" not in body


def test_features_list_every_gate_with_the_measured_rates(real, real_sample):
    _, server = real
    facts = real_sample.facts
    items = {i["feature"]: i for i in ok(server.get("/api/features"))["items"]}
    assert items.keys() == FACT_OF_GATE.keys()
    for feature, fact in FACT_OF_GATE.items():
        assert round(items[feature]["match_rate"], 4) == round(facts["match_rates"][fact]["rate"], 4)
        assert items[feature]["status"] == (
            "SUPPORTED" if facts["match_rates"][fact]["rate"] >= 0.9 else "NOT_SUPPORTED_BY_DATA"
        )
    assert "/api/kpis/by-employee" in items["kpis_by_employee"]["endpoints"]


@pytest.mark.parametrize("period", [None, PERIOD], ids=["all-days", "one-month"])
def test_quality_endpoints_equal_sql_over_core(real, period):
    warehouse, server = real
    bounds = {"start": period[0], "end": period[1]} if period else EVERY_DAY
    query = {"from": period[0].isoformat(), "to": period[1].isoformat()} if period else {}
    defects = sql(
        warehouse,
        """
        SELECT e.erro_fase_avaliacao AS phase, o.of_produto_id AS product, e.ofch_gravidade AS severity, count(*) AS n
        FROM core.erros_ordem_fabrico e JOIN core.ordens_fabrico o ON o.of_id = e.erro_of_id
        WHERE e.ofch_event_time::date BETWEEN %(start)s AND %(end)s GROUP BY 1, 2, 3""",
        bounds,
    )
    overview = ok(server.get("/api/quality/overview", params=query))
    assert overview["defects"] == sum(d["n"] for d in defects) > 0
    assert overview["by_severity"] == {
        str(s): sum(d["n"] for d in defects if d["severity"] == s) for s in {d["severity"] for d in defects}
    }
    by_phase = {i["fase_avaliacao_id"]: i for i in ok(server.get("/api/quality/by-phase", params=query))["items"]}
    by_product = {i["produto_id"]: i for i in ok(server.get("/api/quality/by-product", params=query))["items"]}
    for phase in {d["phase"] for d in defects}:
        assert by_phase[phase]["defects"] == sum(d["n"] for d in defects if d["phase"] == phase)
        assert by_phase[phase]["severity_3"] == sum(
            d["n"] for d in defects if d["phase"] == phase and d["severity"] == 3
        )
    assert by_product.keys() == {d["product"] for d in defects}
    for product, item in by_product.items():
        assert item["defects"] == sum(d["n"] for d in defects if d["product"] == product)


def test_schedule_current_equals_the_open_phases(real):
    warehouse, server = real
    expected = {
        r["fase_id"]: r
        for r in sql(
            warehouse,
            """
        SELECT f.fase_of_fase_id AS fase_id, count(*) AS n, count(DISTINCT f.fase_of_of_id) AS orders
        FROM core.fases_ordem_fabrico f JOIN core.ordens_fabrico o ON o.of_id = f.fase_of_of_id
        WHERE f.fase_of_fim IS NULL GROUP BY 1""",
        )
    }
    items = {i["fase_id"]: i for i in ok(server.get("/api/prodplan/schedule/current"))["items"]}
    assert items.keys() == expected.keys() and items
    for fase_id, e in expected.items():
        assert (items[fase_id]["n_open_phases"], items[fase_id]["n_orders"]) == (e["n"], e["orders"])
        assert items[fase_id]["max_age_seconds"] > 0


def test_one_order_and_its_phases(real):
    warehouse, server = real
    (chosen,) = sql(
        warehouse,
        """
        SELECT o.of_id, o.of_produto_id, o.lead_time_seconds, count(DISTINCT f.fase_of_id) AS phases,
               (SELECT count(*) FROM core.erros_ordem_fabrico e WHERE e.erro_of_id = o.of_id) AS defects
        FROM core.ordens_fabrico o JOIN core.fases_ordem_fabrico f ON f.fase_of_of_id = o.of_id
        GROUP BY o.of_id ORDER BY 5 DESC, o.of_id LIMIT 1""",
    )
    body = ok(server.get(f"/api/prodplan/orders/{chosen['of_id']}"))
    assert (body["of_id"], body["produto_id"], body["phases"], body["defects"]) == (
        chosen["of_id"],
        chosen["of_produto_id"],
        chosen["phases"],
        chosen["defects"],
    )
    assert body["defects"] > 0 and body["lead_time_seconds"] == chosen["lead_time_seconds"]
    phases = ok(server.get(f"/api/prodplan/orders/{chosen['of_id']}/phases"))["items"]
    expected = sql(
        warehouse,
        """SELECT fase_of_id FROM core.fases_ordem_fabrico WHERE fase_of_of_id = %s
                                 ORDER BY fase_of_sequencia, fase_of_inicio, fase_of_id""",
        (chosen["of_id"],),
    )
    assert [p["fase_of_id"] for p in phases] == [e["fase_of_id"] for e in expected]


def test_a_repeated_url_gets_the_same_answer_from_the_front_cache(real):
    _, server = real
    first = server.get("/api/kpis/overview?from=2022-01-01&to=2022-06-30")
    again = server.get("/api/kpis/overview?from=2022-01-01&to=2022-06-30")
    reordered = server.get("/api/kpis/overview?to=2022-06-30&from=2022-01-01")  # another URL, same key
    assert again.headers["X-Cache"] == reordered.headers["X-Cache"] == "hit"
    assert first.content == again.content == reordered.content
    for _ in range(2):  # errors are never kept: each repeat is validated afresh
        assert server.get("/api/prodplan/orders?limit=501").status_code == 422
        assert server.get("/api/prodplan/orders/999999999").status_code == 404


def test_unknown_orders_are_404_and_bad_ids_422(real):
    _, server = real
    for path in ("/api/prodplan/orders/999999999", "/api/prodplan/orders/999999999/phases"):
        response = server.get(path)
        assert assert_problem(response, 404)["error"] == "order 999999999 not found"
    assert server.get("/api/prodplan/orders/abc").status_code == 422


# --- pagination and parameters ------------------------------------------------------------------


def walk(server, params: dict) -> tuple[list[int], int]:
    """Every of_id over every page, and the number of pages."""
    ids, pages, cursor = [], 0, None
    while True:
        body = ok(server.get("/api/prodplan/orders", params={**params, **({"cursor": cursor} if cursor else {})}))
        ids += [item["of_id"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return ids, pages


def test_pagination_walks_every_order_exactly_once(real):
    warehouse, server = real
    expected = [r["of_id"] for r in sql(warehouse, "SELECT of_id FROM core.ordens_fabrico ORDER BY of_id")]
    ids, pages = walk(server, {"limit": 97})
    assert ids == expected and pages == -(-len(expected) // 97)


def test_filters_select_exactly_the_matching_orders(real):
    warehouse, server = real
    (product,) = sql(
        warehouse,
        """SELECT of_produto_id AS p FROM core.ordens_fabrico GROUP BY 1
                                 ORDER BY count(*) DESC, 1 LIMIT 1""",
    )
    cases = {
        (("product", product["p"]),): "of_produto_id = %(product)s",
        (("status", "open"),): "of_data_acabamento IS NULL",
        (("status", "late"), ("created_from", "2022-01-01")): "NOT is_on_time AND of_data_criacao >= '2022-01-01'",
        (("phase", 12), ("created_to", "2023-06-30")): "of_fase_id = 12 AND of_data_criacao < '2023-07-01'",
    }
    for params, condition in cases.items():
        params = dict(params)
        expected = [
            r["of_id"]
            for r in sql(warehouse, f"SELECT of_id FROM core.ordens_fabrico WHERE {condition} ORDER BY of_id", params)
        ]
        assert expected, params
        assert walk(server, {**params, "limit": 50})[0] == expected, params


def test_bad_parameters_are_422_with_a_message(real):
    _, server = real
    first = ok(server.get("/api/prodplan/orders", params={"limit": 5, "status": "open"}))
    bad = {
        "limit above 500": {"limit": 501},
        "limit 0": {"limit": 0},
        "status": {"status": "lost"},
        "date": {"created_from": "2024-13-01"},
        "unknown parameter": {"limt": 5},
        "garbage cursor": {"cursor": "not-a-cursor"},
        "cursor of other filters": {"cursor": first["next_cursor"], "status": "finished"},
    }
    for case, params in bad.items():
        response = server.get("/api/prodplan/orders", params=params)
        assert response.status_code == 422, case
        assert response.json()["error"], case
    assert "limt" in server.get("/api/prodplan/orders", params={"limt": 5}).json()["error"]
    assert server.get("/api/kpis/overview", params={"from": "yesterday"}).status_code == 422
    for day in ("0", "1700000000", "2023-3-1", "20230301"):  # a day is YYYY-MM-DD, as the schema says
        refused = server.get("/api/kpis/overview", params={"to": day})
        assert refused.status_code == 422 and "YYYY-MM-DD" in refused.json()["detail"], day


DATED = (
    "/api/kpis/overview",
    "/api/kpis/by-phase",
    "/api/kpis/by-product",
    "/api/quality/overview",
    "/api/quality/by-phase",
    "/api/quality/by-product",
)
INT4_OUT = (2**31, -(2**31) - 1)


def out_of_range_cases() -> list[tuple[str, dict, str]]:
    """(path, params, the parameter the 422 must name) for every parameter of every endpoint."""
    no_filters = queries.OrderFilters().as_dict()
    cases = [(path, {"from": "2023-03-02", "to": "2023-03-01"}, "from") for path in DATED]
    cases += [("/api/prodplan/orders", {name: value}, name) for name in ("product", "phase") for value in INT4_OUT]
    cases += [
        ("/api/prodplan/orders", {"created_from": "2023-03-02", "created_to": "2023-03-01"}, "created_from"),
        ("/api/prodplan/orders", {"limit": 2**64}, "limit"),
        ("/api/prodplan/orders", {"status": "x"}, "status"),
        ("/api/prodplan/orders", {"cursor": cursors.encode(2**31, no_filters)}, "cursor"),
        ("/api/prodplan/orders", {"cursor": "%%%"}, "cursor"),
        ("/api/ingestion/runs", {"limit": 101}, "limit"),
        ("/api/ingestion/runs", {"limit": 0}, "limit"),
        ("/api/ingestion/runs", {"cursor": cursors.encode(2**63, queries.RUNS_CURSOR_SCOPE)}, "cursor"),
        ("/api/ingestion/runs", {"cursor": "e30"}, "cursor"),
    ]
    cases += [(f"/api/prodplan/orders/{of_id}{tail}", {}, "of_id") for of_id in INT4_OUT for tail in ("", "/phases")]
    return cases


def test_out_of_range_parameters_are_422_naming_the_parameter(real):
    _, server = real
    for path, params, name in out_of_range_cases():
        response = server.get(path, params=params)
        assert response.status_code == 422, (path, params, response.text)
        assert response.json()["error"].startswith(f"{name}:"), (path, params, response.text)


def test_any_date_is_accepted_and_days_beyond_the_window_count_as_its_edges(real):
    """The schema says `date`: a day before 1990 or after 2099 (where no fact lies) selects what
    the window's edge does, instead of a 422 the schema does not announce."""
    _, server = real
    envelope = ("cache_version", "as_of", "snapshot")

    def body(path, params):
        return {k: v for k, v in ok(server.get(path, params=params)).items() if k not in envelope}

    for path in DATED:
        assert body(path, {"from": "0001-01-01", "to": "9999-12-31"}) == body(
            path, {"from": "1990-01-01", "to": "2099-12-31"}
        ), path
        assert body(path, {"from": "0010-01-31"})["period"] == {"from": "1990-01-01", "to": None}
    # days out of order are still a client's mistake, even both beyond one edge
    response = server.get("/api/kpis/overview", params={"from": "1980-01-02", "to": "1980-01-01"})
    assert response.status_code == 422 and response.json()["error"].startswith("from:")
    wide = {"created_from": "0001-01-01", "created_to": "9999-12-31"}
    edges = {"created_from": "1990-01-01", "created_to": "2099-12-31"}
    assert body("/api/prodplan/orders", wide) == body("/api/prodplan/orders", edges)


def test_the_edges_of_every_range_are_accepted(real):
    _, server = real
    for path in DATED:
        ok(server.get(path, params={"from": "1990-01-01", "to": "2099-12-31"}))
    edges = {"product": 2**31 - 1, "phase": -(2**31), "created_from": "1990-01-01", "created_to": "2099-12-31"}
    assert ok(server.get("/api/prodplan/orders", params=edges))["items"] == []
    assert ok(server.get("/api/prodplan/orders", params={"created_from": "2023-03-01", "created_to": "2023-03-01"}))
    for path in (f"/api/prodplan/orders/{2**31 - 1}", f"/api/prodplan/orders/{-(2**31)}/phases"):
        assert server.get(path).status_code == 404


def test_an_overlong_url_is_414_before_routing_and_never_cached(real):
    _, server = real
    before = ok(server.get("/api/cache/stats"))
    overlong = f"/api/kpis/overview?from=2022-01-01&pad={'x' * MAX_QUERY}"
    for _ in range(2):
        response = server.get(overlong)
        assert response.status_code == 414 and "X-Cache" not in response.headers
        assert assert_problem(response, 414)["error"] == (
            f"query string is {MAX_QUERY + 20} characters; at most {MAX_QUERY} are accepted"
        )
    assert server.get(f"/api/prodplan/orders/{'1' * 2000}").json()["error"].startswith("path is")
    after = ok(server.get("/api/cache/stats"))
    assert {k: after[k] for k in ("hits", "misses", "computations")} == {
        k: before[k] for k in ("hits", "misses", "computations")
    }


def held_bytes(store: InProcessCache) -> int:
    """The bytes of what the store holds, measured afresh (not its own running total)."""
    return sum(entry_bytes(key, entry[1]) for key, entry in store._entries.items())


def test_the_in_process_cache_is_bounded_in_bytes_keys_included():
    bound = 2**20
    store = InProcessCache(max_entries=10**6, max_bytes=bound)
    for n in range(400):  # ~18 MiB offered: keys of 3 KiB (two-byte characters) and 40 KiB bodies
        store.put(f"{n}:" + "é" * 1500, "x" * 40_000)
        assert store.bytes_held == held_bytes(store) <= bound
    assert 0 < len(store) < 400 and store.bytes_held > bound - 50_000
    store.put("huge", "x" * (bound + 1))  # alone above the bound: not kept, nothing evicted for it
    assert store._peek("huge") is None and store.bytes_held == held_bytes(store) > 0


def test_the_front_cache_bound_covers_its_keys_and_bodies():
    """Distinct long URLs with large 200 answers through the ASGI layer: keys are counted too."""
    body = b"{" + b" " * 30_000 + b"}"

    async def endpoint(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-cache-version", b"7")]})
        await send({"type": "http.response.body", "body": body})

    async def discard(message):
        pass

    version = type("V", (), {"number": 7})()
    api = type("A", (), {"versions": type("S", (), {"peek": staticmethod(lambda: version)})()})()
    front = FrontCache(endpoint, api, max_bytes=2**20)

    async def ask_many():
        for n in range(300):
            query = f"n={n}&pad={'q' * (MAX_QUERY - 20)}".encode()
            await front(
                {"type": "http", "method": "GET", "path": "/api/kpis/overview", "query_string": query}, None, discard
            )
            assert front.store.bytes_held == held_bytes(front.store) <= 2**20

    asyncio.run(ask_many())
    assert 0 < len(front.store) < 300


def test_openapi_documents_every_endpoint(real):
    _, server = real
    paths = ok(server.get("/openapi.json"))["paths"]
    for path in (
        "/api/health",
        "/api/kpis/overview",
        "/api/kpis/by-phase",
        "/api/kpis/by-product",
        "/api/kpis/by-employee",
        "/api/quality/overview",
        "/api/quality/by-phase",
        "/api/quality/by-product",
        "/api/prodplan/orders",
        "/api/prodplan/orders/{of_id}",
        "/api/prodplan/orders/{of_id}/phases",
        "/api/prodplan/schedule/current",
        "/api/features",
        "/api/ingestion/runs",
        "/api/ingestion/run",
    ):
        assert path in paths, path
    assert "post" in paths["/api/ingestion/run"]
    labels = ok(server.get("/openapi.json"))["components"]["schemas"]["SnapshotLabels"]["properties"]
    assert labels.keys() == {"facts_run_id", "aggregates_run_id", "catching_up", "note"}
    assert server.get("/docs").status_code == 200


def test_a_schema_driven_fuzzer_finds_every_operation_keeping_its_contract(real):
    """`schemathesis run` with the project's schemathesis.toml (fixed seed, bounded examples,
    every check; the narrowings there say why) against the real server: every operation the
    schema lists is generated for, valid and invalid requests alike, and none breaks it."""
    _, server = real
    operations = sum(len(methods) for methods in ok(server.get("/openapi.json"))["paths"].values())
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json", "--no-color"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert "Seed: 20261207" in output, "the project's schemathesis.toml was used"
    assert f"Tested: {operations}" in output, output[-3000:]
    generated, passed = map(int, re.search(r"(\d+) generated, (\d+) passed", output).groups())
    assert generated == passed > 10 * operations, output[-3000:]


def test_health_reports_the_warehouse(real):
    warehouse, server = real
    body = ok(server.get("/api/health"))
    (version,) = sql(warehouse, "SELECT version FROM ops.cache_version")
    assert body["status"] == "ok" and body["database"] == {"reachable": True}
    assert body["cache_version"] == version["version"] and body["last_successful_ingestion"]
    assert body["feature_gates"]["kpis_by_employee"] == "NOT_SUPPORTED_BY_DATA"


# --- the snapshot labels ------------------------------------------------------------------------

LABELS = """SELECT v.version, l.facts_run_id, l.aggregates_run_id, l.aggregates_catching_up
            FROM ops.cache_version v CROSS JOIN ops.snapshot_labels l"""
ANALYTICS_LAYERS = LABELLED  # the view counts every analytics layer and the feature gates (last)
SET_WATERMARK = """INSERT INTO ops.watermarks (name, value) VALUES (%s, %s)
                   ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()"""
# Aggregates, per-order facts, lists and a gated refusal (by-employee is off on the real data).
LABELLED = (
    "/api/kpis/overview",
    "/api/kpis/by-product",
    "/api/kpis/by-employee",
    "/api/quality/overview",
    "/api/prodplan/orders?limit=1",
    "/api/prodplan/schedule/current",
    "/api/features",
)


def labels_of(row: dict) -> dict:
    return {
        "facts_run_id": row["facts_run_id"],
        "aggregates_run_id": row["aggregates_run_id"],
        "catching_up": row["aggregates_catching_up"],
    }


def served(server, path: str, version: int) -> dict:
    """The body of ``path`` once the server answers ``version`` (its NOTIFY arrives in ms)."""
    deadline = time.monotonic() + 3
    while (body := ok(server.get(path)))["cache_version"] != version:
        assert time.monotonic() < deadline, f"{path} still answers version {body['cache_version']}"
        time.sleep(0.05)
    return body


def test_every_data_response_carries_the_labels_of_the_view(real):
    warehouse, server = real
    (view,) = sql(warehouse, LABELS)
    expected = labels_of(view)
    assert expected["facts_run_id"] >= 1
    of_id = sql(warehouse, "SELECT min(of_id) AS of_id FROM core.ordens_fabrico")[0]["of_id"]
    for path in (*LABELLED, f"/api/prodplan/orders/{of_id}", f"/api/prodplan/orders/{of_id}/phases"):
        snapshot = served(server, path, view["version"])["snapshot"]
        assert {k: snapshot[k] for k in expected} == expected, path
        assert (snapshot["note"] is None) is not expected["catching_up"], path
    assert served(server, "/api/kpis/by-employee", view["version"])["status"] == "NOT_SUPPORTED_BY_DATA"
    health = until(lambda: (h := ok(server.get("/api/health")))["cache_version"] == view["version"] and h)
    assert health["snapshot"] == snapshot


@pytest.fixture(scope="module")
def two_runs(databases, tmp_path_factory):
    """Two generated snapshots ingested one after the other, so that aggregates can lag the facts
    by a real run (the shared fixtures hold one snapshot each: facts_run_id 1)."""
    home = tmp_path_factory.mktemp("api_two_runs")
    write_sample(first := home / "Folha_IA.xlsx", scale=0.01, seed=3)
    renamed = edited(first, home / "renamed.xlsx", lambda book: setattr(book["Fases"]["B2"], "value", "Renamed"))
    warehouse = databases.warehouse("api_two_runs")
    for workbook in (first, renamed):  # the second run updates one catalogue row
        assert ingest_workbook(warehouse, workbook).passed
    rebuild_downstream(warehouse)
    server = ApiServer(server_env(home, url_of(warehouse)))
    yield warehouse, server
    server.stop()


def set_watermarks(warehouse, runs: dict[str, int]) -> int:
    """The analytics layers' watermarks at ``runs`` (a layer left out has none), committed with a
    version bump and its NOTIFY as a refresh commits them; the new version."""
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM ops.watermarks WHERE name = ANY(%s)", (list(ANALYTICS_LAYERS),))
        for name, run_id in runs.items():
            cur.execute(SET_WATERMARK, (name, str(run_id)))
        cur.execute("UPDATE ops.cache_version SET version = version + 1, updated_at = now() RETURNING version")
        (version,) = cur.fetchone()
        cur.execute("SELECT pg_notify('prodplan_cache_version', %s)", (str(version),))
    return version


def test_responses_say_when_the_aggregates_are_catching_up(two_runs):
    warehouse, server = two_runs
    first, last = [r["run_id"] for r in sql(warehouse, "SELECT run_id FROM ops.ingestion_runs ORDER BY 1")]
    caught_up = dict.fromkeys(ANALYTICS_LAYERS, last)
    steps = [  # (watermarks, the snapshot a response must carry)
        (
            {**caught_up, "analytics.agg_quality_daily": first},  # the least caught-up layer counts
            {
                "facts_run_id": last,
                "aggregates_run_id": first,
                "catching_up": True,
                "note": f"aggregates reflect ingestion run {first} and are catching up with run {last}; "
                f"per-order facts are from run {last}",
            },
        ),
        (
            {name: last for name in ANALYTICS_LAYERS[:-1]},  # one layer without a watermark yet
            {
                "facts_run_id": last,
                "aggregates_run_id": 0,
                "catching_up": True,
                "note": f"aggregates reflect no ingestion run yet and are catching up with run {last}; "
                f"per-order facts are from run {last}",
            },
        ),
        (caught_up, {"facts_run_id": last, "aggregates_run_id": last, "catching_up": False, "note": None}),
    ]
    for watermarks, expected in steps:
        version = set_watermarks(warehouse, watermarks)
        (view,) = sql(warehouse, LABELS)
        assert view["version"] == version and labels_of(view) == {k: expected[k] for k in labels_of(view)}
        for path in ("/api/kpis/overview", "/api/prodplan/orders?limit=1", "/api/quality/by-phase"):
            assert served(server, path, version)["snapshot"] == expected, (path, watermarks)
        again = server.get("/api/kpis/overview")  # a cached body carries its own version's labels
        assert again.headers["X-Cache"] == "hit" and again.json()["snapshot"] == expected


# --- the gate on, and the cache -----------------------------------------------------------------


def test_by_employee_serves_real_kpis_when_the_links_match(synthetic):
    warehouse, server, _ = synthetic
    (gate,) = sql(warehouse, "SELECT match_rate, status FROM ops.feature_gates WHERE feature = 'kpis_by_employee'")
    assert gate["status"] == "SUPPORTED" and gate["match_rate"] > 0.9
    expected = {
        r["id"]: r
        for r in sql(
            warehouse,
            """
        SELECT l.funcionario_fase_of_funcionario_id AS id, count(*) AS n, avg(f.duration_seconds) AS mean,
               count(*) FILTER (WHERE l.funcionario_fase_of_chefe = 1) AS chief
        FROM core.funcionarios_fase_ordem_fabrico l
        JOIN core.fases_ordem_fabrico f ON f.fase_of_id = l.funcionario_fase_of_fase_of_id GROUP BY 1""",
        )
    }
    body = ok(server.get("/api/kpis/by-employee"))
    assert "status" not in body
    got = {i["funcionario_id"]: i for i in body["items"]}
    assert got.keys() == expected.keys() and len(got) > 50
    for employee, e in expected.items():
        assert (got[employee]["n_phases"], got[employee]["n_as_chief"]) == (e["n"], e["chief"])
        assert got[employee]["mean_duration_seconds"] == approx(e["mean"])


def test_product_attributes_are_gated_off_on_the_generated_data(synthetic):
    _, server, _ = synthetic
    body = ok(server.get("/api/kpis/by-product"))
    gate = body["product_attributes"]
    assert gate["status"] == "NOT_SUPPORTED_BY_DATA" and gate["match_rate"] < gate["threshold"] == 0.9
    assert body["items"] and all("attributes" not in item for item in body["items"])


def test_a_refresh_that_commits_is_served_at_once(synthetic):
    warehouse, server, _ = synthetic
    (day,) = sql(
        warehouse,
        """SELECT snapshot_date AS day, sum(n) AS n FROM analytics.agg_order_stats_daily
                             GROUP BY 1 ORDER BY 2 DESC LIMIT 1""",
    )
    before = server.get("/api/kpis/overview")
    assert server.get("/api/kpis/overview").headers["X-Cache"] == "hit"
    old_version = int(before.headers["X-Cache-Version"])
    # What a refresh of that day does, with the day's orders gone (as if re-exported without them).
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM analytics.agg_order_stats_daily WHERE snapshot_date = %s", (day["day"],))
        refresh_views(conn)
        time.sleep(1.2)  # uncommitted: the API keeps answering the old version meanwhile
        assert ok(server.get("/api/kpis/overview")) == before.json()
        committed_version = bump_cache_version(conn)
    committed = time.monotonic()
    while (after := server.get("/api/kpis/overview")).headers["X-Cache-Version"] == str(old_version):
        assert time.monotonic() - committed < 2.0, "the NOTIFY of the new version was not heard"
        time.sleep(0.05)
    assert int(after.headers["X-Cache-Version"]) == committed_version and after.headers["X-Cache"] == "miss"
    assert after.json()["orders"]["finished"] == before.json()["orders"]["finished"] - day["n"]
    with warehouse.connect() as conn:  # put the day back, as the next refresh would
        refresh(conn, ORDER_STATS, day["day"], day["day"] + timedelta(days=1))
        refresh_views(conn)
        bump_cache_version(conn)


def computations(servers, key: str) -> int:
    return sum(ok(s.get("/api/cache/stats"))["computations_by_key"].get(key, 0) for s in servers)


def assert_computed_once(servers, path: str, period: tuple[date, date]) -> None:
    query = f"?from={period[0]}&to={period[1]}"
    # 20 threads released at once, spread over the servers
    responses = together(20, lambda i: httpx.get(f"{servers[i % len(servers)].url}{path}{query}", timeout=30))
    assert not [r for r in responses if isinstance(r, Exception)], responses
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1  # one computation, one answer
    versions = {r.headers["X-Cache-Version"] for r in responses}
    assert len(versions) == 1
    key = cache_key(int(versions.pop()), path.removeprefix("/api/"), {"from": period[0], "to": period[1]})
    assert computations(servers, key) == 1


def test_twenty_concurrent_misses_compute_once_in_process(real):
    _, server = real
    assert_computed_once([server], "/api/kpis/by-product", (date(2021, 2, 1), date(2022, 5, 31)))


def test_twenty_concurrent_misses_compute_once_across_processes_with_redis(synthetic, redis_url, tmp_path):
    _, _, env = synthetic
    env = {**env, "PRODPLAN_REDIS_URL": redis_url, "PRODPLAN_HOME": str(tmp_path)}
    servers = [ApiServer(env), ApiServer(env)]
    try:
        assert ok(servers[0].get("/api/health"))["cache"]["backend"] == "redis"
        assert_computed_once(servers, "/api/kpis/by-phase", (date(2020, 3, 1), date(2021, 8, 31)))
    finally:
        for s in servers:
            s.stop()


# --- HTTP conventions: problem details, conditional GET -----------------------------------------


def assert_problem(response: httpx.Response, status: int) -> dict:
    """An RFC 9457 problem-details answer, which still carries the earlier ``error`` field."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body = response.json()
    assert body["status"] == status and body["type"].startswith("urn:prodplan:problem:"), body
    assert body["title"] and body["detail"] and body["error"] == body["detail"], body
    return body


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/api/kpis/overview?from=2024-13-01", 422),  # FastAPI's validation
        ("GET", "/api/kpis/overview?from=2024-02-01&to=2024-01-01", 422),  # a handler's own check
        ("GET", "/api/prodplan/orders?limt=5", 422),  # an unknown parameter
        ("GET", "/api/prodplan/orders?cursor=forged", 422),  # a cursor it did not issue
        ("GET", "/api/prodplan/orders/2147483000", 404),  # a route's not-found, through the cache
        ("GET", "/api/no/such/path", 404),  # Starlette's own
        ("DELETE", "/api/kpis/overview", 405),
        ("GET", "/api/kpis/overview?from=" + "9" * 3000, 414),  # before routing (raw ASGI)
        ("GET", "/docs/assets/nothing.js", 404),
    ],
    ids=[
        "validation",
        "window",
        "unknown-parameter",
        "cursor",
        "unknown-order",
        "unknown-path",
        "method",
        "too-long",
        "docs-asset",
    ],
)
def test_every_error_path_answers_problem_details(real, method, path, status):
    _, server = real
    body = assert_problem(server.client.request(method, path), status)
    if status == 422 and "from=2024-13-01" in path:
        assert body["errors"] and body["errors"][0]["loc"] == ["query", "from"], body


def test_a_cached_answer_is_revalidated_by_its_etag_until_a_new_snapshot(databases, tmp_path):
    workbook = tmp_path / "Folha_IA.xlsx"
    write_sample(workbook, scale=0.01, seed=13)
    warehouse = databases.warehouse("api_etag")
    assert ingest_workbook(warehouse, workbook).passed
    rebuild_downstream(warehouse)
    server = ApiServer(server_env(tmp_path / "home", url_of(warehouse), PRODPLAN_CACHE_VERSION_TTL="60"))
    path = "/api/kpis/overview"
    try:
        first = server.get(path)
        tag, version = first.headers["etag"], first.json()["cache_version"]
        assert first.status_code == 200 and tag.startswith(f'"v{version}-')
        assert first.headers["cache-control"] == "public, max-age=60"  # the version TTL
        assert server.get(path, params={"from": "2024-01-01"}).headers["etag"] != tag, "per request"
        for attempt in ("front cache", "front cache again"):  # the 200 above is in the front cache
            same = server.get(path, headers={"If-None-Match": tag})
            assert (same.status_code, same.content, same.headers["x-cache"]) == (304, b"", "hit"), attempt
            assert same.headers["etag"] == tag and same.headers["cache-control"] == "public, max-age=60"
        # another process (another worker behind a balancer) has not seen the URL: its front
        # cache misses and the full path revalidates the same tag, in a list, weak or not
        other = ApiServer(server_env(tmp_path / "other", url_of(warehouse), PRODPLAN_CACHE_VERSION_TTL="60"))
        try:
            again = other.get(path, headers={"If-None-Match": f'"other", W/{tag}'})
            assert (again.status_code, again.content, again.headers["x-cache"]) == (304, b"", "miss")
            assert again.headers["etag"] == tag
        finally:
            other.stop()
        assert server.get(path, headers={"If-None-Match": '"v0-other"'}).status_code == 200

        def rename_a_phase(book):
            book["Fases"]["B2"].value = "Laminagem (renamed)"

        assert ingest_workbook(warehouse, edited(workbook, tmp_path / "renamed.xlsx", rename_a_phase)).passed
        rebuild_downstream(warehouse)
        deadline = time.monotonic() + 10
        while (after := server.get(path, headers={"If-None-Match": tag})).status_code == 304:
            assert time.monotonic() < deadline, "the new snapshot never reached the server"
            time.sleep(0.05)
        assert after.status_code == 200 and after.json()["cache_version"] > version
        assert after.headers["etag"] not in (tag, None) and after.headers["etag"].startswith(
            f'"v{after.json()["cache_version"]}-'
        )
        assert server.get(path, headers={"If-None-Match": after.headers["etag"]}).status_code == 304
    finally:
        server.stop()


# --- metrics --------------------------------------------------------------------------------------


def scrape(server: ApiServer) -> dict[tuple[str, tuple], float]:
    """GET /metrics parsed: (sample name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    response = server.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def requests_of(samples: dict, route: str, status: int) -> float:
    return samples.get(
        ("prodplan_api_requests_total", (("method", "GET"), ("route", route), ("status", str(status)))), 0.0
    )


def test_metrics_count_the_requests_a_client_made_by_route_and_status(real):
    warehouse, server = real
    before = scrape(server)
    orders = "/api/prodplan/orders/{of_id}"
    for _ in range(7):
        assert server.get("/api/kpis/by-phase").status_code == 200  # the first computes, the rest hit
    for of_id in (2**31 - 1, 2**31 - 2, 2**31 - 3):  # three paths, one route label
        assert server.get(f"/api/prodplan/orders/{of_id}").status_code == 404
    assert server.get("/api/kpis/overview", params={"to": "x" * (MAX_QUERY + 1)}).status_code == 414
    assert server.get("/no/such/path").status_code == 404
    after = scrape(server)
    counted = {
        (route, status): requests_of(after, route, status) - requests_of(before, route, status)
        for route, status in (
            ("/api/kpis/by-phase", 200),
            (orders, 404),
            ("/api/kpis/overview", 414),
            ("(unmatched)", 404),
        )
    }
    assert counted == {
        ("/api/kpis/by-phase", 200): 7,
        (orders, 404): 3,
        ("/api/kpis/overview", 414): 1,
        ("(unmatched)", 404): 1,
    }
    latency = ("prodplan_api_request_duration_seconds_count", (("method", "GET"), ("route", "/api/kpis/by-phase")))
    assert after[latency] - before.get(latency, 0.0) == 7
    hits = ("prodplan_api_cache_events_total", (("event", "hits"),))
    assert after[hits] - before.get(hits, 0.0) >= 6, "six repeats of one URL are cache hits"
    (version,) = sql(warehouse, "SELECT version FROM ops.cache_version")
    assert after[("prodplan_cache_version", ())] == version["version"]
    assert after[("prodplan_warehouse_reachable", ())] == 1.0
    (last,) = sql(
        warehouse,
        "SELECT extract(epoch FROM now() - max(finished_at)) AS age FROM ops.ingestion_runs WHERE status = 'succeeded'",
    )
    assert abs(after[("prodplan_seconds_since_last_successful_ingestion", ())] - float(last["age"])) < 5


def test_metrics_sum_every_worker_of_the_server(real, tmp_path):
    warehouse, _ = real
    server = ApiServer(server_env(tmp_path / "home", url_of(warehouse)), workers=2)
    try:
        answered_by = set()
        for _ in range(40):  # a new connection each: the kernel hands them to either worker
            response = httpx.get(f"{server.url}/api/cache/stats", timeout=30)
            answered_by.add(response.json()["pid"])
        assert len(answered_by) == 2, "both workers answered"
        for _ in range(3):  # whichever worker answers the scrape, it sums both
            assert requests_of(scrape(server), "/api/cache/stats", 200) == 40
    finally:
        server.stop()


# --- writes -------------------------------------------------------------------------------------


def test_writes_are_refused_without_a_configured_key(real):
    _, server = real  # started without PRODPLAN_API_KEY
    response = server.post("/api/ingestion/run", headers={"X-API-Key": "anything"})
    assert response.status_code == 403 and "PRODPLAN_API_KEY is not set" in response.json()["error"]
    assert_problem(response, 403)


def test_ingestion_run_needs_the_key_and_launches_an_ingestion(synthetic):
    warehouse, server, _ = synthetic
    assert_problem(server.post("/api/ingestion/run"), 401)
    assert_problem(server.post("/api/ingestion/run", headers={"X-API-Key": API_KEY[:-1] + "X"}), 403)
    runs_before = ok(server.get("/api/ingestion/runs"))["items"]
    started = server.post("/api/ingestion/run", headers={"X-API-Key": API_KEY}, json={"force": False})
    assert started.status_code == 202, started.text
    again = server.post("/api/ingestion/run", headers={"X-API-Key": API_KEY})
    assert again.status_code == 409 and "still running" in again.json()["error"]
    assert_problem(again, 409)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        runs = ok(server.get("/api/ingestion/runs"))["items"]
        if len(runs) > len(runs_before) and runs[0]["status"] != "running":
            break
        time.sleep(1)
    else:
        pytest.fail(f"no ingestion run finished; log:\n{open(started.json()['log']).read()[-3000:]}")
    assert runs[0]["status"] == "succeeded", runs[0]
    assert {s["status"] for s in runs[0]["sheets"]} == {"skipped_unchanged"}  # same workbook again
    log = Path(started.json()["log"])
    while '"exit_code": 0' not in log.read_text():  # the child runs the rest of the graph, then ends
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(1)
    walked, cursor = [], None
    while True:  # the runs list is keyset-paginated too, newest first
        page = ok(server.get("/api/ingestion/runs", params={"limit": 1, **({"cursor": cursor} if cursor else {})}))
        walked += [r["run_id"] for r in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert walked == [r["run_id"] for r in sql(warehouse, "SELECT run_id FROM ops.ingestion_runs ORDER BY run_id DESC")]
    assert len(walked) >= 2


def test_serve_refuses_a_busy_port_and_a_bad_one_in_one_sentence(cli_env):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = run_cli(["serve", "--port", str(port)], cli_env, timeout=60)
    assert taken.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in taken.stderr
    assert "Traceback" not in taken.stderr
    bad = run_cli(["serve", "--port", "70000"], cli_env, timeout=60)
    assert bad.returncode == 1 and "--port must be between 1 and 65535" in bad.stderr


# --- the database going away --------------------------------------------------------------------


def until(condition, timeout: float = 5.0):
    """Poll ``condition()`` until it returns something truthy (health is re-checked each second)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)
    return value


def test_health_is_503_while_the_database_is_stopped(tmp_path):
    pgdata = tmp_path / "home" / "pgdata"  # where prodplan starts its embedded server
    server = ApiServer(server_env(tmp_path / "home", None))
    try:
        assert ok(server.get("/api/health"))["database"] == {"reachable": True}
        assert stop_embedded_server(pgdata)
        down = until(lambda: (r := server.get("/api/health")).status_code == 503 and r)
        assert down.json()["database"]["reachable"] is False and down.json()["checked_at"]
        kpis = server.get("/api/kpis/overview")
        assert kpis.status_code == 503 and "unreachable" in kpis.json()["error"]
        assert_problem(kpis, 503)
        embedded_server_uri(pgdata)  # started again: the API recovers without a restart
        assert until(lambda: server.get("/api/health").status_code == 200)
        assert ok(server.get("/api/kpis/overview"))["cache_version"] == 0
    finally:
        server.stop()
        stop_embedded_server(pgdata)
