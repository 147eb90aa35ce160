"""What the API and cache tests share: reading the warehouse as dicts, comparing figures,
checking a 200, and releasing threads at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest


def approx(value):
    """Equal to 9 significant digits (sums in another order); None only equals None."""
    return None if value is None else pytest.approx(float(value), rel=1e-9, abs=1e-6)


def url_of(warehouse) -> str:
    return warehouse.url.render_as_string(hide_password=False)


def sql(warehouse, statement: str, params=None) -> list[dict]:
    with warehouse.connect() as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def together(n: int, call) -> list:
    """``call(i)`` from threads i = 0..n-1 released at once; the results or exceptions raised."""
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait()
        try:
            return call(i)
        except Exception as exc:  # noqa: BLE001 - the tests inspect what each thread saw
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))
