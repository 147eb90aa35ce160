"""The planner analytics (bottlenecks, defect Pareto, orders at risk) over real HTTP, against an
independent pandas computation over the workbook file itself: on the real sample (or its
generated stand-in) and on a generated workbook.

Every figure is as of the export's own time (data_as_of), so a re-ingest of the same export on
another day (another local date for Python and for PostgreSQL) changes nothing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from prodplan_pipeline.analytics.rebuild import rebuild_downstream
from prodplan_pipeline.ingest.pipeline import ingest_workbook
from prodplan_pipeline.warehouse import Warehouse
from prodplan_pipeline.workbook.sample import write_sample

from .api_helpers import approx, ok, sql, url_of
from .api_server import ApiServer, server_env
from .workbook_facts import data_as_of, defect_keys, orders_at_risk, phase_flow, read_frames

PARETO_BY = {
    "description": ("Erro_Descricao", None),
    "culprit_phase": ("culprit_phase", "culprit_reason"),
    "product": ("product", "product_reason"),
}
ENVELOPE = ("cache_version", "as_of", "snapshot")  # when it was served, not what


@dataclass
class Planner:
    path: Path
    frames: dict[str, pd.DataFrame]
    warehouse: Warehouse
    server: ApiServer


@pytest.fixture(scope="module", params=["real_sample", "generated"])
def planner(request, databases, tmp_path_factory):
    home = tmp_path_factory.mktemp(f"planner_{request.param}")
    if request.param == "real_sample":
        path = request.getfixturevalue("real_sample").path
    else:
        path = home / "Folha_IA.xlsx"
        write_sample(path, scale=0.03, seed=23)
    warehouse = databases.warehouse(f"planner_{request.param}")
    assert ingest_workbook(warehouse, path).passed
    rebuild_downstream(warehouse)
    server = ApiServer(server_env(home, url_of(warehouse)))
    yield Planner(path, read_frames(path), warehouse, server)
    server.stop()


def test_data_as_of_is_the_newest_plausible_phase_time_of_the_export(planner):
    expected = data_as_of(planner.frames).to_pydatetime()
    recorded = sql(planner.warehouse, "SELECT data_as_of FROM ops.ingestion_runs ORDER BY run_id DESC LIMIT 1")
    assert recorded == [{"data_as_of": expected}]
    for path in ("/api/kpis/bottlenecks", "/api/quality/pareto?by=product", "/api/prodplan/orders/at-risk"):
        body = ok(planner.server.get(path))
        assert body["data_as_of"] == expected.isoformat(), path
        assert body["units"]["data_as_of"] and body["snapshot"]["facts_run_id"] >= 1, path
    ages = sql(planner.warehouse, "SELECT max(max_age_seconds) AS oldest FROM analytics.agg_wip_current")
    phases = planner.frames["FasesOrdemFabrico"]
    starts = pd.to_datetime(phases.FaseOf_Inicio[phases.FaseOf_Fim.isna()], errors="coerce")
    starts = starts[starts >= pd.Timestamp("1990-01-01")]
    # WIP ages too are measured at data_as_of (open phases of known orders: the oldest is one)
    assert ages[0]["oldest"] <= (expected - starts.min()).total_seconds() + 1e-6


def test_bottlenecks_equal_littles_law_over_the_workbook(planner):
    expected = phase_flow(planner.frames)
    body = ok(planner.server.get("/api/kpis/bottlenecks"))
    got = {item["fase_id"]: item for item in body["items"]}
    assert set(got) == set(expected) and expected
    for phase, facts in expected.items():
        item = got[phase]
        assert (item["wip"], item["finished_30d"]) == (facts["wip"], facts["finished_30d"]), phase
        assert item["throughput_per_day"] == approx(facts["finished_30d"] / 30)
        wait = facts["wip"] / (facts["finished_30d"] / 30) if facts["finished_30d"] else None
        assert item["expected_wait_days"] == approx(wait), phase
        assert item["p90_wip_age_seconds"] == approx(facts["p90_wip_age_seconds"]), phase
    waits = [i["expected_wait_days"] for i in body["items"]]
    known = [w for w in waits if w is not None]
    assert known == sorted(known, reverse=True) and waits == known + [None] * (len(waits) - len(known))
    assert any(w is not None and w > 0 for w in waits)


def _expected_pareto(defects: pd.DataFrame, by: str) -> tuple[dict, dict]:
    """{key: count} with the unknown keys as one "unknown" count, and {reason: count}."""
    key, reason = PARETO_BY[by]
    reasons = {r: int(n) for r, n in defects[reason].dropna().value_counts().items()} if reason else {}
    known = defects[defects[reason].isna()] if reason else defects
    counts = {_key(k): int(n) for k, n in known[key].value_counts().items()}
    return counts | ({"unknown": sum(reasons.values())} if reasons else {}), reasons


def _key(value):
    return int(value) if isinstance(value, float) else value


@pytest.mark.parametrize("by", list(PARETO_BY))
@pytest.mark.parametrize("period", [False, True], ids=["every-defect", "one-year"])
def test_the_defect_pareto_equals_counts_over_the_workbook(planner, by, period):
    defects = defect_keys(planner.frames)
    params = {"by": by}
    if period:
        last = max(d for d in defects.day if d is not None and pd.notna(d))
        start = date(last.year - 1, last.month, 1)
        defects = defects[defects.day.map(lambda d: d is not None and pd.notna(d) and start <= d <= last)]
        params |= {"from": start.isoformat(), "to": last.isoformat()}
    counts, reasons = _expected_pareto(defects, by)
    body = ok(planner.server.get("/api/quality/pareto", params=params))
    got = {item["key"]: item for item in body["items"]}
    assert {k: i["n"] for k, i in got.items()} == counts
    assert body["defects"] == len(defects) > 0
    if reasons:
        assert got["unknown"]["reasons"] == reasons and got["unknown"]["reason"]
    counts = [i["n"] for i in body["items"]]
    assert counts == sorted(counts, reverse=True)
    running = 0
    for item in body["items"]:
        running += item["n"]
        assert item["share"] == approx(item["n"] / len(defects))
        assert item["cumulative_share"] == approx(running / len(defects))
    assert body["items"][-1]["cumulative_share"] == approx(1.0)


def _every_at_risk_page(server, limit: int = 40) -> tuple[dict, list[dict]]:
    first = ok(server.get("/api/prodplan/orders/at-risk", params={"limit": limit}))
    items, body = list(first["items"]), first
    while body["next_cursor"]:
        body = ok(server.get("/api/prodplan/orders/at-risk", params={"limit": limit, "cursor": body["next_cursor"]}))
        items += body["items"]
    return first, items


def test_orders_at_risk_equal_an_eta_from_the_workbooks_routes_and_medians(planner):
    slack, unassessed = orders_at_risk(planner.frames)
    first, items = _every_at_risk_page(planner.server)
    assert {i["of_id"] for i in items} == set(slack) and len(items) == len(slack) > 0
    for item in items:
        assert item["slack_seconds"] == pytest.approx(slack[item["of_id"]], abs=1e-3), item["of_id"]
    slacks = [i["slack_seconds"] for i in items]
    assert slacks == sorted(slacks)  # most negative first
    assert first["unassessed"] == unassessed
    total = len(slack) + sum(unassessed.values())
    assert (first["open_orders_with_due_date"], first["assessed"]) == (total, len(slack))
    assert first["share_assessed"] == approx(len(slack) / total)


@pytest.mark.parametrize(
    "path, params",
    [
        ("/api/quality/pareto", {"by": "colour"}),
        ("/api/quality/pareto", {}),
        ("/api/quality/pareto", {"by": "product", "from": "2024-02-01", "to": "2024-01-01"}),
        ("/api/quality/pareto", {"by": "product", "from": "yesterday"}),
        ("/api/quality/pareto", {"by": "product", "since": "2024-01-01"}),
        ("/api/prodplan/orders/at-risk", {"limit": 0}),
        ("/api/prodplan/orders/at-risk", {"cursor": "not-a-cursor"}),
        ("/api/kpis/bottlenecks", {"window": 7}),
    ],
    ids=[
        "unknown-by",
        "no-by",
        "from-after-to",
        "not-a-date",
        "unknown-parameter",
        "zero-limit",
        "forged-cursor",
        "bottlenecks-unknown-parameter",
    ],
)
def test_bad_parameters_are_422_naming_them(planner, path, params):
    response = planner.server.get(path, params=params)
    assert response.status_code == 422, response.text
    named = [*params] or ["by"]
    assert any(name in response.text for name in named), response.text


def _figures(server) -> dict:
    """Every planner figure, and the WIP ages (without when each was computed)."""
    paths = [
        "/api/kpis/bottlenecks",
        "/api/prodplan/orders/at-risk?limit=500",
        "/api/prodplan/schedule/current",
        *(f"/api/quality/pareto?by={by}" for by in PARETO_BY),
    ]
    figures = {p: {k: v for k, v in ok(server.get(p)).items() if k not in ENVELOPE} for p in paths}
    for item in figures["/api/prodplan/schedule/current"]["items"]:
        item.pop("as_of")
    return figures


def _another_day(zone: str) -> None:
    """Local time for this process and its PostgreSQL sessions in ``zone``."""
    os.environ["TZ"] = os.environ["PGTZ"] = zone
    time.tzset()


def test_a_reingest_of_the_same_export_on_another_day_changes_no_figure(planner, monkeypatch):
    before = _figures(planner.server)
    monkeypatch.setenv("TZ", os.environ.get("TZ", "UTC"))
    monkeypatch.setenv("PGTZ", os.environ.get("PGTZ", "UTC"))
    try:
        # 26 hours ahead of UTC-12: "today" is another date for any code reading a clock
        _another_day("Etc/GMT-14")
        warehouse = Warehouse(planner.warehouse.url)  # new sessions, in the new zone
        assert ingest_workbook(warehouse, planner.path, force=True).passed
        rebuild_downstream(warehouse)
    finally:
        monkeypatch.undo()
        time.tzset()
    after = _figures(planner.server)
    assert after == before
