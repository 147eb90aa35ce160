"""Errors as RFC 9457 problem details (``application/problem+json``), one shape for every error
path: the request limits and the front cache (raw ASGI), the validation handler and the routes.

Each body has the standard members ``type`` (a URN naming the kind of problem), ``title`` (the
kind, the same for every instance), ``status`` and ``detail`` (this instance, in one sentence),
and keeps ``error`` (the same sentence) so clients written against the earlier ``{"error": …}``
bodies keep working. A 422 from parameter validation adds ``errors``, one entry per parameter.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse

MEDIA_TYPE = "application/problem+json"

# status -> (type, title): the kinds of problem this API answers.
KINDS: dict[int, tuple[str, str]] = {
    400: ("urn:prodplan:problem:bad-request", "Bad request"),
    401: ("urn:prodplan:problem:api-key-missing", "API key missing"),
    403: ("urn:prodplan:problem:api-key-refused", "API key refused"),
    404: ("urn:prodplan:problem:not-found", "Not found"),
    405: ("urn:prodplan:problem:method-not-allowed", "Method not allowed"),
    409: ("urn:prodplan:problem:conflict", "Already running"),
    414: ("urn:prodplan:problem:uri-too-long", "Request URI too long"),
    422: ("urn:prodplan:problem:invalid-parameters", "Invalid parameters"),
    503: ("urn:prodplan:problem:database-unavailable", "Warehouse database unavailable"),
}
GENERIC = ("about:blank", "Error")


def problem(status: int, detail: str, **extra: Any) -> dict[str, Any]:
    """The problem-details body for ``status`` with this instance's ``detail``."""
    kind, title = KINDS.get(status, GENERIC)
    return {"type": kind, "title": title, "status": status, "detail": detail, "error": detail, **extra}


def response(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """The problem-details answer, for a route or an exception handler."""
    return JSONResponse(problem(status, detail, **extra), status_code=status, headers=headers, media_type=MEDIA_TYPE)


def encode(status: int, detail: str, **extra: Any) -> bytes:
    return json.dumps(problem(status, detail, **extra)).encode()


def schema(status: int) -> dict[str, Any]:
    """The OpenAPI response entry for ``status`` (for ``responses=`` of a route)."""
    kind, title = KINDS.get(status, GENERIC)
    properties = {
        "type": {"type": "string", "description": "a URN naming the kind of problem", "example": kind},
        "title": {"type": "string", "example": title},
        "status": {"type": "integer", "example": status},
        "detail": {"type": "string", "description": "this problem, in one sentence"},
        "error": {"type": "string", "description": "the same sentence (the earlier error field)"},
    }
    if status == 422:
        properties["errors"] = {
            "type": "array",
            "items": {"type": "object"},
            "description": "one entry per invalid parameter",
        }
    return {
        "description": title,
        "content": {
            MEDIA_TYPE: {
                "schema": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail", "error"],
                    "properties": properties,
                }
            }
        },
    }
