"""A front cache in ASGI: a GET whose exact path and query string were answered 200 under the
current cache version is answered again from memory, before routing and parameter validation.

Under load most requests are repeats, and FastAPI's routing, parameter parsing and response
building cost several times more CPU than the cache lookup itself. The key holds the version, so
this layer can never be staler than the versioned cache behind it; a URL spelt differently (other
parameter order) simply misses here and is served by the full path.
"""

from __future__ import annotations

from typing import Any

from prodplan_pipeline.serving.cache import InProcessCache

CACHED_PREFIXES = ("/api/kpis/", "/api/quality/", "/api/prodplan/", "/api/features")
VERSION_HEADER = b"x-cache-version"


class FrontCache:
    def __init__(self, app: Any, api: Any, max_entries: int = 100_000, max_chars: int = 128 * 2**20):
        self.app = app
        self.api = api
        self.store = InProcessCache(max_entries=max_entries, max_chars=max_chars)

    async def __call__(self, scope, receive, send) -> None:
        if (scope["type"] != "http" or scope["method"] != "GET"
                or not scope["path"].startswith(CACHED_PREFIXES)):
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
