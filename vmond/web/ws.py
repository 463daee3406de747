"""``/ws``: live updates for dashboards and other clients, with replay after a dropped connection.

Each client gets its own bounded queue (a bus subscription) drained by its own sender task: a browser that
stops reading is cut off when its queue fills, and reconnects with ``?since=<seq>`` to get what it missed, or
``resync`` when the server no longer holds it (or ``&bus=<id>`` names another node's bus: sequence numbers are
per node, see :mod:`vmond.util.bus`). Browsers authenticate with the session cookie and must come
from the dashboard's own origin (a foreign page could otherwise ride on the cookie).

A socket lives no longer than its session: signing out closes it at once, and every
:data:`SESSION_CHECK_INTERVAL` seconds the sockets whose session expired, was deleted (a password change, even
one made with the command line) or whose user was disabled are closed with 4401. What a client may send is
rate-limited; a client that keeps flooding is closed with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from vmond.store.scope import Scope, visible
from vmond.store.users import valid_sessions
from vmond.util import auth
from vmond.util.bus import Bus, Message, Subscription
from vmond.util.ratelimit import TokenBucket
from vmond.web.keys import AUTH_VIA, BUS, DB, PRESENCE, PRINCIPAL, WARNINGS, WS_CLIENTS
from vmond.web.scope import message_allowed, scope_from
from vmond.web.security import json_error, origin_ok, require

log = logging.getLogger(__name__)

routes = web.RouteTableDef()  # this module's routes; vmond.web.app.create_app adds them

QUEUE_PER_CLIENT = 256
SEND_TIMEOUT = 10.0  # a client that takes longer to accept one message is not keeping up
MAX_CLIENT_MESSAGE = 16 * 1024  # clients only send small control messages
WS_SIGNED_OUT = 4401  # application close code: the page goes to the login form instead of reconnecting
SESSION_CHECK_INTERVAL = 10.0  # seconds between checks that every open socket's session still holds
CLIENT_RATE, CLIENT_BURST = 5.0, 20  # messages a client may send per second, and in a burst
CLIENT_FLOOD = 200  # messages over the rate before the client is disconnected
PRESENCE_MESSAGE = "presence"  # between central nodes: who has which alarm open on a node
PRESENCE_REFRESH = 20.0  # seconds between a node's repeats of who has which alarm open there
PRESENCE_EXPIRY = 3 * PRESENCE_REFRESH  # a node not heard from for this long has no viewers any more


@routes.get("/ws")
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
    # A number from another bus (another central node, or before a restart) names none of this bus's messages.
    foreign = request.query.get("bus", bus.id) != bus.id
    backlog: list[Message] | None = [] if since is None else None if foreign else bus.since(since)
    # A user limited to accounts is sent only what concerns them, replayed messages too.
    sender = asyncio.create_task(_send_loop(ws, subscription, backlog, bus.last_seq, bus.id, scope_from(who)))
    budget = TokenBucket(CLIENT_RATE, CLIENT_BURST)
    over = 0
    try:
        async for message in _received(ws):
            if message.type == WSMsgType.ERROR:
                break
            if not budget.take():
                over += 1
                if over >= CLIENT_FLOOD:
                    if (quiet := request.app[WARNINGS].due("live flood")) is not None:
                        log.warning("closing the live connection of %s: it sent far more than %g messages a "
                                    "second (%d more closed since the last warning)", who["username"], CLIENT_RATE,
                                    quiet)
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too many messages")
                    break
                continue  # over the rate: ignored
            if message.type == WSMsgType.TEXT:
                await _client_message(request, ws, subscription, who, message.data)
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


async def _received(ws: web.WebSocketResponse) -> AsyncIterator[WSMessage]:
    """The client's messages until it closes, or vanishes: aiohttp answers a control ping itself while reading,
    and a client gone meanwhile is an end like any other, not an error to log."""
    try:
        async for message in ws:
            yield message
    except ConnectionError:
        return


async def _client_message(request: web.Request, ws: web.WebSocketResponse, subscription: Subscription,
                          who: dict[str, Any], text: str) -> None:
    """What a client may say: "ping", and which alarm page it shows (guards and up). Anything else is ignored."""
    if text == "ping":
        with contextlib.suppress(ConnectionError):  # a client that went away while asking
            await ws.send_str('{"type":"pong"}')
        return
    try:
        message = json.loads(text)
    except ValueError:
        return
    if not isinstance(message, dict) or not auth.role_allows(who["role"], "guard"):
        return
    if message.get("type") == "watch" and isinstance(message.get("alarm_id"), int):
        scope = scope_from(who)
        if scope.limited and not await request.app[DB].read(visible, scope, "alarm", message["alarm_id"]):
            return  # another account's alarm: who looks at it is none of this user's business
        request.app[PRESENCE].watch(ws, subscription, message["alarm_id"], who["username"])


class Presence:
    """Who has which alarm open, told as ``alarm.viewers`` to the others looking at the same alarm, so that two
    guards do not work it unknowingly.

    Told only when the viewers of an alarm change, and only to the sockets watching that alarm (a socket
    switching between alarms costs its own watchers, never every dashboard), as droppable news of the moment:
    not replayed, and carrying the last ``seq`` so that a client resuming from it misses nothing.

    Several central nodes (issue 19): with *share*, this node's own viewers go to the other nodes (as
    ``{"alarms": {alarm id: [user names]}}``) whenever they change and every :data:`PRESENCE_REFRESH` seconds;
    what the others share comes in through :meth:`remote` and counts until that node has not been heard for
    :data:`PRESENCE_EXPIRY` seconds (a node that died takes its viewers with it).
    """

    def __init__(self, bus: Bus, share: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._bus = bus
        self._share = share
        self._watching: dict[web.WebSocketResponse, tuple[int, str, Subscription]] = {}
        self._remote: dict[str, tuple[float, dict[int, list[str]]]] = {}  # node -> (heard at, alarm -> users)

    def _local(self, alarm_id: int) -> set[str]:
        return {name for watched, name, _ in self._watching.values() if watched == alarm_id}

    def _viewers(self, alarm_id: int) -> list[str]:
        names = self._local(alarm_id)
        for _, alarms in self._remote.values():
            names.update(alarms.get(alarm_id, ()))
        return sorted(names)

    def _tell(self, before: dict[int, list[str]]) -> None:
        """Tell the watchers of each alarm in *before* (its viewers then) when its viewers are not the same now."""
        for alarm_id in sorted(before):
            users = self._viewers(alarm_id)
            if users == before[alarm_id]:
                continue
            message = Message(self._bus.last_seq, "alarm.viewers", {"alarm_id": alarm_id, "users": users})
            for watched, _, subscription in self._watching.values():
                if watched == alarm_id:
                    subscription.offer(message, droppable=True)

    def _change(self, ws: web.WebSocketResponse, now: tuple[int, str, Subscription] | None) -> None:
        previous = self._watching.get(ws)
        if previous == now:
            return
        touched = {entry[0] for entry in (previous, now) if entry is not None}
        before = {alarm_id: self._viewers(alarm_id) for alarm_id in touched}
        local_before = {alarm_id: self._local(alarm_id) for alarm_id in touched}
        if now is None:
            del self._watching[ws]
        else:
            self._watching[ws] = now
        self._tell(before)
        if any(self._local(alarm_id) != names for alarm_id, names in local_before.items()):
            self.share_own()

    def watch(self, ws: web.WebSocketResponse, subscription: Subscription, alarm_id: int, username: str) -> None:
        self._change(ws, (alarm_id, username, subscription))

    def leave(self, ws: web.WebSocketResponse) -> None:
        if ws in self._watching:
            self._change(ws, None)

    def share_own(self) -> None:
        """Tell the other nodes who has which alarm open here (with *share*; else nothing)."""
        if self._share is not None:
            alarms: dict[int, set[str]] = {}
            for watched, name, _ in self._watching.values():
                alarms.setdefault(watched, set()).add(name)
            self._share({"alarms": {str(alarm_id): sorted(names) for alarm_id, names in alarms.items()}})

    def remote(self, node: str, data: dict[str, Any]) -> None:
        """What another node shared (see :meth:`share_own`): it replaces what that node said before."""
        alarms: dict[int, list[str]] = {}
        shared = data.get("alarms")
        for key, names in (shared.items() if isinstance(shared, dict) else ()):
            if isinstance(key, str) and key.isdigit() and isinstance(names, list):
                alarms[int(key)] = [name[:64] for name in names[:100] if isinstance(name, str)]
        _, earlier = self._remote.get(node, (0.0, {}))
        before = {alarm_id: self._viewers(alarm_id) for alarm_id in {*earlier, *alarms}}
        self._remote[node] = (time.monotonic(), alarms)
        self._tell(before)

    def refresh(self) -> None:
        """Share this node's viewers again, and forget the nodes not heard from for :data:`PRESENCE_EXPIRY`."""
        self.share_own()
        cutoff = time.monotonic() - PRESENCE_EXPIRY
        for node, (heard, alarms) in list(self._remote.items()):
            if heard < cutoff:
                before = {alarm_id: self._viewers(alarm_id) for alarm_id in alarms}
                del self._remote[node]
                self._tell(before)


async def presence_refresh(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: :meth:`Presence.refresh` every :data:`PRESENCE_REFRESH` seconds."""

    async def forever() -> None:
        while True:
            await asyncio.sleep(PRESENCE_REFRESH)
            app[PRESENCE].refresh()

    task = asyncio.create_task(forever(), name="presence-refresh")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def close_sockets_of(app: web.Application, *, user_id: int) -> None:
    """Close all live connections of a user (disabled, deleted, or their password changed)."""
    for ws, who in list(app[WS_CLIENTS].items()):
        if who["user_id"] == user_id:
            await ws.close(code=WS_SIGNED_OUT, message=b"signed out")


async def close_session_sockets(app: web.Application, session_hash: str, reason: bytes = b"signed out") -> None:
    """Close the live connections of one session (signed out, expired, revoked)."""
    for ws, who in list(app[WS_CLIENTS].items()):
        if who.get("session_hash") == session_hash:
            await ws.close(code=WS_SIGNED_OUT, message=reason)


async def check_sessions(app: web.Application) -> None:
    """Close every socket whose session no longer holds: expired, deleted, or its user disabled."""
    clients = app[WS_CLIENTS]
    hashes = {who["session_hash"] for who in clients.values() if who.get("session_hash")}
    if not hashes:
        return
    valid = await app[DB].read(valid_sessions, sorted(hashes))
    for session_hash in hashes - valid:
        await close_session_sockets(app, session_hash, b"session ended")


async def session_watch(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the periodic session check, for as long as the application runs."""

    async def forever() -> None:
        while True:
            await asyncio.sleep(SESSION_CHECK_INTERVAL)
            try:
                await check_sessions(app)
            except Exception:  # noqa: BLE001 - the check must outlive a busy database
                log.exception("could not check the sessions of the live connections")

    task = asyncio.create_task(forever(), name="session-watch")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _send_loop(ws: web.WebSocketResponse, subscription: Subscription, backlog: list[Message] | None,
                     seq: int, bus_id: str, scope: Scope) -> None:
    try:
        if backlog is None:
            await _send(ws, {"type": "resync", "seq": seq, "bus": bus_id})
        else:
            for message in backlog:
                if message_allowed(scope, message):
                    await _send(ws, message.as_json())
        async for message in subscription:
            if message_allowed(scope, message):
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
    for ws in list(app[WS_CLIENTS].keys()):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
