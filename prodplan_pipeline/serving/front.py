"""A front cache in ASGI: a GET whose exact path and query string were answered 200 under the
current cache version is answered again from memory, before routing and parameter validation.

Under load most requests are repeats, and FastAPI's routing, parameter parsing and response
building cost several times more CPU than the cache lookup itself. The key holds the version, so
this layer can never be staler than the versioned cache behind it; a URL spelt differently (other
parameter order) simply misses here and is served by the full path.

:class:`RequestLimits`, outermost, refuses overlong paths and query strings (414) before any
routing or caching: no parameter of this API needs more, and a client choosing key sizes must
not be able to fill the front cache with a few huge URLs.
"""

from __future__ import annotations

import json
from typing import Any

from prodplan_pipeline.serving.cache import InProcessCache

CACHED_PREFIXES = ("/api/kpis/", "/api/quality/", "/api/prodplan/", "/api/features")
VERSION_HEADER = b"x-cache-version"
# Every filter of the orders list with a cursor fits in a few hundred characters; paths
# are a prefix and one int32 id. Far above either, far below uvicorn's own 16 KiB request limit.
MAX_QUERY = 2_048
MAX_PATH = 1_024
# Keys and bodies: a repeat layer only; a miss here still hits the 256 MiB versioned cache behind.
FRONT_CACHE_BYTES = 64 * 2**20


class RequestLimits:
    """414 with a one-line JSON message for an overlong path or query string, before routing."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            problem = _too_long(scope)
            if problem is not None:
                await _send_json(send, 414, {"error": problem})
                return
        await self.app(scope, receive, send)


def _too_long(scope) -> str | None:
    path = scope.get("raw_path") or scope["path"].encode()
    if len(path) > MAX_PATH:
        return f"path is {len(path)} characters; at most {MAX_PATH} are accepted"
    query = scope.get("query_string", b"")
    if len(query) > MAX_QUERY:
        return f"query string is {len(query)} characters; at most {MAX_QUERY} are accepted"
    return None


class FrontCache:
    def __init__(self, app: Any, api: Any, max_entries: int = 100_000,
                 max_bytes: int = FRONT_CACHE_BYTES):
        self.app = app
        self.api = api
        self.store = InProcessCache(max_entries=max_entries, max_bytes=max_bytes)

    async def __call__(self, scope, receive, send) -> None:
        if (scope["type"] != "http" or scope["method"] != "GET"
                or not scope["path"].startswith(CACHED_PREFIXES)
                or _too_long(scope) is not None):  # never cached, even without RequestLimits
            await self.app(scope, receive, send)
            return
        current = self.api.versions.peek()  # None when stale: the full path re-reads the version
        if current is not None:
            entry = self.store.peek(_key(current.number, scope))
            if entry is not None:
                self.api.cache.count_hit()
                await _replay(send, entry, current.number)
                return
        await self.app(scope, receive, self._capturing(scope, send))

    def _capturing(self, scope, send):
        """``send`` that also keeps a 200 answer of a cached endpoint, under its own version."""
        started: dict[str, Any] = {}
        body = bytearray()

        async def capture(message) -> None:
            if message["type"] == "http.response.start":
                started.update(message)
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                version = dict(started.get("headers", [])).get(VERSION_HEADER)
                if not message.get("more_body") and started.get("status") == 200 and version:
                    self.store.put(_key(int(version), scope), bytes(body))  # bytes: no re-encoding
            await send(message)
        return capture


def _key(version: int, scope) -> str:
    return f"{version}|{scope['path']}?{scope['query_string'].decode('latin-1')}"


async def _replay(send, payload: bytes, version: int) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
        (b"x-cache", b"hit"), (VERSION_HEADER, str(version).encode())]})
    await send({"type": "http.response.body", "body": payload})


async def _send_json(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
