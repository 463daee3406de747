"""``/ws``: live updates for dashboards and other clients, with replay after a dropped connection.

Each client gets its own bounded queue (a bus subscription) drained by its own sender task: a browser that
stops reading is cut off when its queue fills, and reconnects with ``?since=<seq>`` to get what it missed, or
``resync`` when the server no longer holds it. Browsers authenticate with the session cookie and must come
from the dashboard's own origin (a foreign page could otherwise ride on the cookie).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from vmond import auth
from vmond.bus import Bus, Message, Subscription
from vmond.keys import AUTH_VIA, BUS, PRESENCE, PRINCIPAL, WS_CLIENTS
from vmond.web.security import json_error, origin_ok, require

log = logging.getLogger(__name__)

QUEUE_PER_CLIENT = 256
SEND_TIMEOUT = 10.0  # a client that takes longer to accept one message is not keeping up
MAX_CLIENT_MESSAGE = 16 * 1024  # clients only send small control messages
WS_SIGNED_OUT = 4401  # application close code: the page goes to the login form instead of reconnecting


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
    who = request[PRINCIPAL]
    assert who is not None
    clients[ws] = who
    # No await between subscribing and reading the history: no message can fall between the two.
    subscription = bus.subscribe(QUEUE_PER_CLIENT)
    backlog: list[Message] | None = [] if since is None else bus.since(since)
    sender = asyncio.create_task(_send_loop(ws, subscription, backlog, bus.last_seq))
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await _client_message(request, ws, who, message.data)
            elif message.type == WSMsgType.ERROR:
                break
    finally:
        subscription.close()
        sender.cancel()
        try:
            await sender
        except asyncio.CancelledError:
            pass
        clients.pop(ws, None)
        request.app[PRESENCE].leave(ws)
    return ws


async def _client_message(request: web.Request, ws: web.WebSocketResponse, who: dict[str, Any], text: str) -> None:
    """What a client may say: "ping", and which alarm page it shows (guards and up). Anything else is ignored."""
    if text == "ping":
        await ws.send_str('{"type":"pong"}')
        return
    try:
        message = json.loads(text)
    except ValueError:
        return
    if not isinstance(message, dict) or not auth.role_allows(who["role"], "guard"):
        return
    if message.get("type") == "watch" and isinstance(message.get("alarm_id"), int):
        request.app[PRESENCE].watch(ws, message["alarm_id"], who["username"])


class Presence:
    """Who has which alarm open, announced as ``alarm.viewers`` so two guards don't work the same alarm unknowingly."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._watching: dict[web.WebSocketResponse, tuple[int, str]] = {}

    def _announce(self, alarm_id: int) -> None:
        users = sorted({name for watched, name in self._watching.values() if watched == alarm_id})
        self._bus.publish("alarm.viewers", {"alarm_id": alarm_id, "users": users})

    def watch(self, ws: web.WebSocketResponse, alarm_id: int, username: str) -> None:
        previous = self._watching.get(ws)
        self._watching[ws] = (alarm_id, username)
        if previous is not None and previous[0] != alarm_id:
            self._announce(previous[0])
        self._announce(alarm_id)

    def leave(self, ws: web.WebSocketResponse) -> None:
        previous = self._watching.pop(ws, None)
        if previous is not None:
            self._announce(previous[0])


async def close_sockets_of(app: web.Application, *, user_id: int, session_csrf: str | None = None) -> None:
    """Close a user's live connections: all of them, or only one session's (at logout)."""
    for ws, who in list(app[WS_CLIENTS].items()):
        if who["user_id"] == user_id and (session_csrf is None or who.get("csrf_token") == session_csrf):
            await ws.close(code=WS_SIGNED_OUT, message=b"signed out")


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
    async with asyncio.timeout(SEND_TIMEOUT):
        await ws.send_json(payload)


async def close_all(app: web.Application) -> None:
    """on_shutdown: tell every client we are going away (they reconnect to the next instance)."""
    for ws in list(app[WS_CLIENTS]):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
