"""``/ws``: live updates for dashboards and other clients, with replay after a dropped connection.

Each client gets its own bounded queue (a bus subscription) drained by its own sender task: a browser that
stops reading is cut off when its queue fills, and reconnects with ``?since=<seq>`` to get what it missed, or
``resync`` when the server no longer holds it. Browsers authenticate with the session cookie and must come
from the dashboard's own origin (a foreign page could otherwise ride on the cookie).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from vmond.bus import Message, Subscription
from vmond.keys import AUTH_VIA, BUS, WS_CLIENTS
from vmond.web.security import json_error, origin_ok, require

log = logging.getLogger(__name__)

QUEUE_PER_CLIENT = 256
SEND_TIMEOUT = 10.0  # a client that takes longer to accept one message is not keeping up
MAX_CLIENT_MESSAGE = 16 * 1024  # clients only send small control messages


@require("guard")
async def websocket(request: web.Request) -> web.StreamResponse:
    if request[AUTH_VIA] == "cookie" and not origin_ok(request):
        log.warning("refused a WebSocket from foreign origin %s", request.headers.get("Origin"))
        return json_error(403, "WebSocket origin not allowed")
    since: int | None = None
    if "since" in request.query:
        try:
            since = int(request.query["since"])
        except ValueError:
            return json_error(400, "since must be a sequence number")

    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_CLIENT_MESSAGE)
    await ws.prepare(request)
    bus = request.app[BUS]
    clients = request.app[WS_CLIENTS]
    clients.add(ws)
    # No await between subscribing and reading the history: no message can fall between the two.
    subscription = bus.subscribe(QUEUE_PER_CLIENT)
    backlog: list[Message] | None = [] if since is None else bus.since(since)
    sender = asyncio.create_task(_send_loop(ws, subscription, backlog, bus.last_seq))
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT and message.data == "ping":
                await ws.send_str('{"type":"pong"}')
            elif message.type == WSMsgType.ERROR:
                break
    finally:
        subscription.close()
        sender.cancel()
        try:
            await sender
        except asyncio.CancelledError:
            pass
        clients.discard(ws)
    return ws


async def _send_loop(ws: web.WebSocketResponse, subscription: Subscription, backlog: list[Message] | None,
                     seq: int) -> None:
    try:
        if backlog is None:
            await _send(ws, {"type": "resync", "seq": seq})
        else:
            for message in backlog:
                await _send(ws, message.as_json())
        async for message in subscription:
            await _send(ws, message.as_json())
        if subscription.overflowed:
            log.warning("dropping a live client that fell behind; it will reconnect and catch up")
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")
    except (TimeoutError, ConnectionError):
        log.info("dropping a live client that stopped reading")
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")


async def _send(ws: web.WebSocketResponse, payload: dict[str, Any]) -> None:
    await asyncio.wait_for(ws.send_json(payload), timeout=SEND_TIMEOUT)


async def close_all(app: web.Application) -> None:
    """on_shutdown: tell every client we are going away (they reconnect to the next instance)."""
    for ws in list(app[WS_CLIENTS]):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
