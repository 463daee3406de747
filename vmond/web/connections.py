"""The dashboard's listening socket, with the limits aiohttp does not have.

aiohttp keeps a connection that never sends a request open for as long as the client likes, and accepts as many
as the file descriptor limit allows: twenty thousand silent connections once took the descriptors the SMTP door
and the database needed. Here every accepted connection passes :class:`ConnectionGuard` first:

- at most ``web.max_connections_per_peer`` per client address, beyond which a short ``503`` and the
  connection is closed at once; and at most ``web.max_connections`` in all: when they are all taken, a new
  connection takes the place of the oldest one that has not sent its first request yet (a page that is
  working, a WebSocket for example, is never pushed out), and only when every one is working gets the ``503``.
  Silent connections from many addresses therefore cannot lock the dashboard;
- the TLS handshake (done here, after the count, so a handshake that never ends is counted too) and the first
  request's header must arrive within :data:`FIRST_REQUEST_WITHIN` seconds; after that, aiohttp's keep-alive
  timeout closes a connection that stays idle between requests (slow headers included).

The guard sits in front of aiohttp's own protocol (``web.Server``, created by the runner) and hands it the
connection once admitted. :class:`GuardedSite` is ``web.TCPSite`` with the guard's protocol factory; it sets
``BaseSite._server``, the one private attribute it relies on (the listening server that ``stop()`` closes).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from aiohttp import web

from vmond.util.ratelimit import Repeats, peer_ip
from vmond.web.keys import CONNECTIONS

log = logging.getLogger(__name__)

FIRST_REQUEST_WITHIN = 10.0  # seconds from accept to a complete request header (TLS handshake included)
KEEPALIVE_TIMEOUT = 30.0  # seconds an idle keep-alive connection is kept (aiohttp's default is 75)
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n"
         b"Retry-After: 5\r\nConnection: close\r\n\r\ntoo many connections\n")


class ConnectionGuard:
    """Counts the dashboard's connections and admits or refuses each new one."""

    def __init__(self, max_total: int, max_per_peer: int, first_request_within: float | None = None) -> None:
        self.max_total = max_total
        self.max_per_peer = max_per_peer
        self.first_request_within = first_request_within or FIRST_REQUEST_WITHIN
        self._per_peer: Counter[str] = Counter()
        self._by_transport: dict[asyncio.BaseTransport, GuardedConnection] = {}
        self._silent: OrderedDict[GuardedConnection, None] = OrderedDict()  # no request yet, oldest first
        self.open = 0
        self.refused = 0
        self.expired = 0  # closed for sending no request in time
        self.pushed_out = 0  # closed, still silent, to make room for a new connection
        self._repeats = Repeats()

    def admit(self, peer: str, connection: GuardedConnection) -> bool:
        if self._per_peer[peer] >= self.max_per_peer:
            self._refuse(peer, f"{self.max_per_peer} connections from one address (web.max_connections_per_peer)")
            return False
        if self.open >= self.max_total:
            if not self._silent:
                self._refuse(peer, f"{self.max_total} connections in all (web.max_connections)")
                return False
            oldest = next(iter(self._silent))
            self.pushed_out += 1
            oldest.close_silent()
        self.open += 1
        self._per_peer[peer] += 1
        self._silent[connection] = None
        return True

    def _refuse(self, peer: str, limit: str) -> None:
        self.refused += 1
        if (quiet := self._repeats.due("refused")) is not None:
            log.warning("refused a dashboard connection from %s: at the limit of %s; %d more refused since the last "
                        "warning", peer, limit, quiet)

    def first_request(self, connection: GuardedConnection) -> None:
        self._silent.pop(connection, None)

    def release(self, peer: str, connection: GuardedConnection) -> None:
        self._silent.pop(connection, None)
        self.open -= 1
        self._per_peer[peer] -= 1
        if self._per_peer[peer] <= 0:
            del self._per_peer[peer]

    def request_seen(self, transport: asyncio.BaseTransport | None) -> None:
        """A complete request header arrived on *transport* (called by :func:`first_request_middleware`)."""
        connection = self._by_transport.get(transport) if transport is not None else None
        if connection is not None:
            connection.first_request_seen()

    def protocol_factory(self, make_handler: Callable[[], asyncio.Protocol], ssl_context: ssl.SSLContext | None
                         ) -> Callable[[], asyncio.Protocol]:
        return lambda: GuardedConnection(self, make_handler, ssl_context)

    def expired_one(self, peer: str) -> None:
        self.expired += 1
        if (quiet := self._repeats.due("expired")) is not None:
            log.info("closed a dashboard connection from %s that sent no request within %.0f s; %d more since",
                     peer, self.first_request_within, quiet)

    def status(self) -> dict[str, int]:
        return {"open": self.open, "max": self.max_total, "max_per_peer": self.max_per_peer,
                "refused": self.refused, "closed_idle": self.expired, "pushed_out": self.pushed_out}


class GuardedConnection(asyncio.Protocol):
    """One accepted connection: counted, given a deadline, upgraded to TLS if needed, then handed to aiohttp."""

    def __init__(self, guard: ConnectionGuard, make_handler: Callable[[], asyncio.Protocol],
                 ssl_context: ssl.SSLContext | None) -> None:
        self._guard = guard
        self._make_handler = make_handler
        self._ssl_context = ssl_context
        self._handler: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._app_transport: asyncio.Transport | None = None
        self._peer: str | None = None  # set while counted
        self._deadline: asyncio.TimerHandle | None = None
        self._tls: asyncio.Task[None] | None = None
        self._early: list[bytes] = []  # what arrived in the TLS handshake's last read, before start_tls returned

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._transport is not None:
            return  # start_tls hands us the same connection again: already counted
        assert isinstance(transport, asyncio.Transport)  # a stream server's: it can abort() and start TLS
        self._transport = transport
        peername = transport.get_extra_info("peername")
        peer = peer_ip(peername) if peername else "unknown"
        if not self._guard.admit(peer, self):
            if self._ssl_context is None and isinstance(transport, asyncio.WriteTransport):
                transport.write(_BUSY)
                transport.close()
            else:
                transport.abort()  # no TLS handshake for a connection that is refused anyway
            return
        self._peer = peer
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._guard.first_request_within, self._expire)
        if self._ssl_context is None:
            self._attach(transport)
        else:
            self._tls = loop.create_task(self._start_tls(transport, self._ssl_context))

    async def _start_tls(self, transport: asyncio.Transport, context: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(transport, self, context, server_side=True,
                                       ssl_handshake_timeout=self._guard.first_request_within)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, RuntimeError) as exc:
            log.debug("TLS handshake with a dashboard client failed: %s", exc)
            transport.abort()
            self._release()
            return
        if tls is None or self._peer is None:  # closed while the handshake ran (start_tls then returns None)
            self._release()
            return
        self._attach(tls)

    def _attach(self, transport: asyncio.Transport) -> None:
        self._app_transport = transport
        self._guard._by_transport[transport] = self
        self._handler = self._make_handler()
        self._handler.connection_made(transport)
        early, self._early = self._early, []
        for data in early:
            self._handler.data_received(data)

    def first_request_seen(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._guard.first_request(self)

    def close_silent(self) -> None:
        """Make room: released at once (the count must be right before the newcomer is counted), then closed."""
        transport = self._app_transport or self._transport
        self._release()
        if transport is not None:
            transport.abort()

    def _expire(self) -> None:
        self._deadline = None
        if self._peer is not None:
            self._guard.expired_one(self._peer)
        transport = self._app_transport or self._transport
        if transport is not None:
            transport.abort()

    def _release(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._app_transport is not None:
            self._guard._by_transport.pop(self._app_transport, None)
        if self._peer is not None:
            self._guard.release(self._peer, self)
            self._peer = None

    def data_received(self, data: bytes) -> None:
        if self._handler is not None:
            self._handler.data_received(data)
        elif self._peer is not None and sum(map(len, self._early)) < 65536:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received() if self._handler is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        if self._tls is not None and not self._tls.done():
            self._tls.cancel()
        if self._handler is not None:
            handler, self._handler = self._handler, None
            handler.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()


@web.middleware
async def first_request_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    guard = request.app.get(CONNECTIONS)
    if guard is not None:
        guard.request_seen(request.transport)
    return await handler(request)


class GuardedSite(web.TCPSite):
    """``web.TCPSite`` whose connections pass through a :class:`ConnectionGuard`."""

    def __init__(self, runner: web.BaseRunner, guard: ConnectionGuard, host: str | None, port: int,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, reuse_address=True)
        self._guard = guard
        self._guarded_host = host
        self._guarded_port = port
        self._guarded_ssl = ssl_context  # TLS is done by the guard after counting, not by the listening socket

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard.protocol_factory(server, self._guarded_ssl), self._guarded_host, self._guarded_port,
            reuse_address=True, backlog=128)
