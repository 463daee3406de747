"""Reading request bodies within bounds: size, time, and JSON nesting.

aiohttp's own limit (``client_max_size``) is one number for the whole application and has no time limit. The
endpoints anyone may call without signing in (the login form, ``/api/token``, first-run setup) read at most
:data:`SMALL_BODY`, and every JSON body is parsed here, where a document nested too deeply for Python's parser
is a 400 like any other malformed JSON instead of a 500.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict

SMALL_BODY = 16 * 1024  # a login or setup form: a name, a password, two tokens and a path
MAX_BODY = 1024 * 1024  # any other form or JSON body (uploads are not a thing here)
BODY_DEADLINE = 30.0  # seconds to receive a whole body: a trickle must not hold a connection open forever
INT64 = 2**63  # the database's integers are 64-bit


class BodyError(Exception):
    """The body cannot be used; ``status`` and ``message`` are the answer."""

    def __init__(self, status: int, message: str, limit: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.limit = limit

    def response(self) -> web.Response:
        return web.json_response({"error": self.message}, status=self.status)

    def http(self) -> web.HTTPException:
        """The same answer as aiohttp's exception, for handlers that turn those into their error bodies."""
        if self.status == 413:
            return web.HTTPRequestEntityTooLarge(max_size=self.limit, actual_size=self.limit + 1, text=self.message)
        kinds = {408: web.HTTPRequestTimeout, 415: web.HTTPUnsupportedMediaType}
        return kinds.get(self.status, web.HTTPBadRequest)(text=self.message)


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The request body, refused with 413 beyond *limit* bytes (declared or received) and with 408 when it does
    not arrive within :data:`BODY_DEADLINE`."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyError(413, f"request body over {limit} bytes", limit)
    data = bytearray()
    try:
        async with asyncio.timeout(BODY_DEADLINE):
            while chunk := await request.content.read(64 * 1024):
                data += chunk
                if len(data) > limit:
                    raise BodyError(413, f"request body over {limit} bytes", limit)
    except TimeoutError:
        raise BodyError(408, "the request body did not arrive in time") from None
    return bytes(data)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(data: bytes) -> Any:
    """JSON from *data*; BodyError(400) for anything that is not (including nesting too deep to parse), and for
    what the database could not store: whole numbers beyond 64 bits, text with lone surrogates (``"\\ud800"``),
    NaN and Infinity."""
    try:
        value = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise BodyError(400, "the body is not valid JSON") from None
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BodyError(400, "the body holds text that is not valid Unicode (a lone surrogate)") from None
        elif (isinstance(item, int) and not -INT64 <= item < INT64) or (
                isinstance(item, float) and not math.isfinite(item)):
            raise BodyError(400, "the body holds a number too large") from None
    return value


async def json_object(request: web.Request, limit: int = MAX_BODY) -> dict[str, Any]:
    """The body as a JSON object (400 for anything else, 413 beyond *limit*)."""
    body = parse_json(await read_limited(request, limit))
    if not isinstance(body, dict):
        raise BodyError(400, "send a JSON object")
    return body


async def form_fields(request: web.Request) -> dict[str, str]:
    """A form posted by a signed-in page (urlencoded or multipart, within :data:`MAX_BODY`) as text fields; 400
    for a body that is not one (text that is not UTF-8, a multipart body without its boundary)."""
    try:
        form = await request.post()
    except (UnicodeDecodeError, ValueError, AssertionError):  # aiohttp's parsers raise these for broken bodies
        raise web.HTTPBadRequest(text="the form could not be read") from None
    return {key: str(value) for key, value in form.items()}


async def small_form(request: web.Request) -> MultiDict[str]:
    """A form posted before sign-in (urlencoded, at most :data:`SMALL_BODY`). Multipart is not needed there:
    browsers send these forms urlencoded."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise BodyError(415, "send the form as application/x-www-form-urlencoded")
    data = await read_limited(request, SMALL_BODY)
    try:
        text = data.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=32)
    except (UnicodeDecodeError, ValueError):
        raise BodyError(400, "the form could not be read") from None
    return MultiDict(pairs)
