"""Numbers from the request line: ids in paths and query strings, and limits, checked before they reach the
database (SQLite's integers end at 2**63 - 1; a larger one would be a 500, not a 404)."""

from __future__ import annotations

import json

from aiohttp import web

from vmond.web.security import is_api

MAX_ID = 2**63 - 1


def parse_id(text: str | None) -> int | None:
    """The id written in *text* (decimal digits, 1 to :data:`MAX_ID`), or None."""
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    value = int(text)
    return value if 0 < value <= MAX_ID else None


def path_id(request: web.Request, name: str) -> int:
    """The id in the path's ``{name}``; 404 when there is none such (JSON for the API, as every API answer)."""
    value = parse_id(request.match_info[name])
    if value is None:
        if is_api(request):
            raise web.HTTPNotFound(text=json.dumps({"error": "not found"}), content_type="application/json")
        raise web.HTTPNotFound()
    return value


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """A whole number from the query string, clamped to [*low*, *high*]; 400 when it is not one."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be a whole number") from None
    return max(low, min(high, value))
