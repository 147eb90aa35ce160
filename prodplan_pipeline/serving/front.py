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

import hashlib
from typing import Any

from prodplan_pipeline.serving import problems
from prodplan_pipeline.serving.cache import InProcessCache

CACHED_PREFIXES = ("/api/kpis/", "/api/quality/", "/api/prodplan/", "/api/features")
VERSION_HEADER = b"x-cache-version"
# Every filter of the orders list with a cursor fits in a few hundred characters; paths
# are a prefix and one int32 id. Far above either, far below uvicorn's own 16 KiB request limit.
MAX_QUERY = 2_048
MAX_PATH = 1_024
# Keys and bodies: a repeat layer only; a miss here still hits the 256 MiB versioned cache behind.
FRONT_CACHE_BYTES = 64 * 2**20


def etag(version: int, path: str, query: bytes) -> str:
    """The ETag of a 200 answer: the snapshot it reflects (its cache version) and the request
    (path and query string as sent). The same request under the same version has one body."""
    request = hashlib.blake2b(path.encode() + b"?" + query, digest_size=8).hexdigest()
    return f'"v{version}-{request}"'


def not_modified(if_none_match: str | None, tag: str) -> bool:
    """Whether an If-None-Match header names ``tag`` (weak comparison, as RFC 9110 asks for
    If-None-Match; ``*`` matches any current answer)."""
    if not if_none_match:
        return False
    offered = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in offered or tag in offered


def cache_control(ttl: float) -> str:
    """A client may reuse an answer as long as this API trusts its own copy of the version."""
    return f"public, max-age={int(ttl)}"


class RequestLimits:
    """414 as problem details for an overlong path or query string, before routing."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            problem = _too_long(scope)
            if problem is not None:
                await send_problem(send, 414, problem)
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
    def __init__(self, app: Any, api: Any, max_entries: int = 100_000, max_bytes: int = FRONT_CACHE_BYTES):
        self.app = app
        self.api = api
        # Its hits are counted once, as the API cache's (count_hit below), in /metrics too.
        self.store = InProcessCache(max_entries=max_entries, max_bytes=max_bytes, exported=False)

    async def __call__(self, scope, receive, send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or not scope["path"].startswith(CACHED_PREFIXES)
            or _too_long(scope) is not None
        ):  # never cached, even without RequestLimits
            await self.app(scope, receive, send)
            return
        current = self.api.versions.peek()  # None when stale: the full path re-reads the version
        if current is not None:
            entry = self.store.peek(_key(current.number, scope))
            if entry is not None:
                self.api.cache.count_hit()
                tag = etag(current.number, scope["path"], scope["query_string"])
                headers = _cache_headers(tag, self.api.cache_control, current.number)
                if not_modified(_header(scope, b"if-none-match"), tag):
                    await _send_not_modified(send, headers)
                else:
                    await _replay(send, entry, headers)
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


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _cache_headers(tag: str, control: str, version: int) -> list[tuple[bytes, bytes]]:
    return [
        (b"etag", tag.encode()),
        (b"cache-control", control.encode()),
        (b"x-cache", b"hit"),
        (VERSION_HEADER, str(version).encode()),
    ]


async def _replay(send, payload: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _send_not_modified(send, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": 304, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def send_problem(send, status: int, detail: str) -> None:
    """A problem-details answer from raw ASGI (the same body the routes give)."""
    payload = problems.encode(status, detail)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", problems.MEDIA_TYPE.encode()),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
