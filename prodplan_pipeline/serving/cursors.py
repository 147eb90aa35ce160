"""Opaque keyset cursors: the last key of a page, bound to the filters it was made with.

A cursor is base64url(JSON {"after": key, "filters": digest}). Reusing it with other filters
would silently skip or repeat rows, so that is refused (422) instead of answered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any


class BadCursor(ValueError):
    """A cursor that is malformed or belongs to other filters."""


def filters_digest(filters: dict[str, Any]) -> str:
    canonical = json.dumps({k: str(v) for k, v in filters.items() if v is not None}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode(after: int, filters: dict[str, Any]) -> str:
    payload = json.dumps({"after": after, "filters": filters_digest(filters)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def page(rows: list[dict[str, Any]], limit: int, key: str, filters: dict[str, Any]) -> dict[str, Any]:
    """``{"items", "next_cursor"}`` from up to ``limit + 1`` rows read after the cursor: the extra
    row is only there to tell that another page exists."""
    items = rows[:limit]
    more = len(rows) > limit
    return {"items": items, "next_cursor": encode(items[-1][key], filters) if more else None}


INT8 = (-(2**63), 2**63 - 1)


def decode(cursor: str, filters: dict[str, Any], bounds: tuple[int, int] = INT8) -> int:
    """The key to continue after; BadCursor when the cursor is not one of ours for these filters.
    ``bounds`` is the key column's range: a forged key outside it would fail in PostgreSQL."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after, digest = payload["after"], payload["filters"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise BadCursor("cursor is not a cursor this API issued; start again without one") from error
    if not isinstance(after, int) or isinstance(after, bool) or not bounds[0] <= after <= bounds[1]:
        raise BadCursor("cursor is not a cursor this API issued; start again without one")
    if digest != filters_digest(filters):
        raise BadCursor(
            "cursor was issued for other filters; repeat the filters of the first page or start again without a cursor"
        )
    return after
