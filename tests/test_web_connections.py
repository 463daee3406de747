"""The dashboard's connections under abuse: silent connections, floods from one address, a WebSocket client that
floods, sessions that end while a socket is open."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp
import pytest
from conftest import Daemon, sample
from test_login_limits import from_address
from test_web import browser_session, log_in

from vmond.config import Config
from vmond.daemon import running
from vmond.store.models import Session, utcnow
from vmond.util import auth
from vmond.web import connections, ws


@pytest.fixture
def opened() -> Iterator[list[socket.socket]]:
    """Every client socket a test opens, closed at its end."""
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


async def open_silent(opened: list[socket.socket], address: str, port: int, count: int) -> list[socket.socket]:
    """*count* connections from *address* that send nothing."""
    sockets = []
    loop = asyncio.get_running_loop()
    for _ in range(count):
        sock = socket.socket()
        opened.append(sock)
        sock.setblocking(False)
        sock.bind((address, 0))
        await loop.sock_connect(sock, ("127.0.0.1", port))
        sockets.append(sock)
    return sockets


async def closed_by_server(sock: socket.socket, within: float) -> bytes:
    """What the server sent before closing *sock*; fails if it is still open after *within* seconds."""
    loop = asyncio.get_running_loop()
    received = b""
    async with asyncio.timeout(within):
        while True:
            try:
                chunk = await loop.sock_recv(sock, 4096)
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk


@pytest.fixture(params=[1.0])
async def guarded(request: pytest.FixtureRequest, make_config: Callable[..., Config],
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Daemon]:
    """A daemon with small connection limits; the first-request deadline is the parameter (seconds)."""
    monkeypatch.setattr(connections, "FIRST_REQUEST_WITHIN", request.param)
    config = make_config(web={"listen": "127.0.0.1:0", "max_connections": 12, "max_connections_per_peer": 5})
    async with running(config) as services:
        yield Daemon(services)


async def test_a_connection_that_sends_nothing_is_closed(opened: list[socket.socket], guarded: Daemon) -> None:
    [silent] = await open_silent(opened, "127.0.0.1", guarded.web_port, 1)
    started = time.monotonic()
    assert await closed_by_server(silent, 5) == b""
    assert time.monotonic() - started < 3
    # A header that never ends (slowloris) is no better.
    [slow] = await open_silent(opened, "127.0.0.1", guarded.web_port, 1)
    loop = asyncio.get_running_loop()
    for part in (b"GET / HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"X-A: 1\r\n"):
        await loop.sock_sendall(slow, part)
        await asyncio.sleep(0.3)
    assert await closed_by_server(slow, 5) == b""
    # A real request in time is served, and the connection stays for the next one (keep-alive).
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.get(f"{guarded.url}/api/health") as response:
                assert response.status == 200
            await asyncio.sleep(1.5)
    status, body = await guarded.api("GET", "/api/health", None)
    assert body["web"]["closed_idle"] == 2


@pytest.mark.parametrize("guarded", [30.0], indirect=True)
async def test_one_address_cannot_take_every_connection(opened: list[socket.socket], guarded: Daemon) -> None:
    await open_silent(opened, "127.0.0.2", guarded.web_port, 5)
    [sixth] = await open_silent(opened, "127.0.0.2", guarded.web_port, 1)
    assert (await closed_by_server(sixth, 2)).startswith(b"HTTP/1.1 503")
    async with from_address("127.0.0.3") as http, http.get(f"{guarded.url}/api/health") as response:
        assert response.status == 200
    # Camera mail is untouched by a saturated dashboard.
    assert (await guarded.send(sample("reolink-person.eml")))["data"][0] == 250


@pytest.mark.parametrize("guarded", [30.0], indirect=True)
async def test_silent_connections_make_room_and_working_ones_stay(opened: list[socket.socket], guarded: Daemon
                                                                  ) -> None:
    await guarded.add_user("guard1", "guard")
    token = await guarded.token("guard1")
    # Silent connections from three addresses fill the dashboard (12 in all) ...
    silent = []
    for address in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        silent += await open_silent(opened, address, guarded.web_port, 4)
    # ... and still a guard gets in, each time in the place of the oldest silent one.
    async with contextlib.AsyncExitStack() as stack:
        sockets = []
        for n in range(12):
            http = await stack.enter_async_context(from_address(f"127.0.1.{n // 5 + 1}", headers={
                "Authorization": f"Bearer {token}"}))
            sockets.append(await stack.enter_async_context(http.ws_connect(f"{guarded.url}/ws")))
        for sock in silent:
            assert await closed_by_server(sock, 2) == b""
        # Now every connection is working: nothing may be pushed out, a newcomer is refused.
        [late] = await open_silent(opened, "127.0.0.9", guarded.web_port, 1)
        assert (await closed_by_server(late, 2)).startswith(b"HTTP/1.1 503")
        assert all(not live.closed for live in sockets)
        status, body = await guarded.api("GET", "/api/health", None)  # no room for this one either ...
        assert status == 503
        await sockets[0].close()  # ... until a page closes
    status, body = await guarded.api("GET", "/api/health", None)
    assert status == 200 and body["web"]["pushed_out"] == 12


async def test_twenty_thousand_silent_connections_cost_nothing_lasting(guarded: Daemon) -> None:
    loop = asyncio.get_running_loop()
    connected = 0
    for _ in range(40):
        batch = []
        for _ in range(500):
            sock = socket.socket()
            batch.append(sock)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, ("127.0.0.1", guarded.web_port))
            except OSError:
                continue
            connected += 1
        for sock in batch:  # let the batch go: the client's own descriptors are limited too
            sock.close()
    assert connected > 10_000
    async with from_address("127.0.0.9") as http, http.get(f"{guarded.url}/api/health") as response:
        assert response.status == 200
        body = await response.json()
    assert body["web"]["open"] <= 12 and body["web"]["refused"] > 1000
    assert (await guarded.send(sample("reolink-person.eml")))["data"][0] == 250


async def test_a_tls_handshake_that_never_ends_is_counted_and_closed(
        opened: list[socket.socket], make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connections, "FIRST_REQUEST_WITHIN", 1.0)
    config = make_config(web={"listen": "127.0.0.1:0", "tls": {"self_signed": True}, "max_connections_per_peer": 3})
    async with running(config) as services:
        daemon = Daemon(services)
        silent = await open_silent(opened, "127.0.0.1", daemon.web_port, 3)
        [fourth] = await open_silent(opened, "127.0.0.1", daemon.web_port, 1)
        assert await closed_by_server(fourth, 2) == b""  # refused at once, not after a handshake
        started = time.monotonic()
        for sock in silent:
            await closed_by_server(sock, 5)
        assert time.monotonic() - started < 3
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http, \
                http.get(f"https://127.0.0.1:{daemon.web_port}/api/health") as response:
            assert response.status == 200


async def test_a_flooding_live_client_disturbs_no_one(daemon: Daemon) -> None:
    await daemon.add_user("admin", "admin")
    await daemon.add_user("guard1", "guard")
    bus = daemon.services.bus
    assert (await daemon.send(sample("reolink-person.eml")))["data"][0] == 250
    await daemon.wait_idle()
    seq_before = bus.last_seq - 1
    admin_token = await daemon.token("admin")
    guard_token = await daemon.token("guard1")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin_token}"}) as admin_http, \
            admin_http.ws_connect(f"{daemon.url}/ws") as admin_ws, \
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {guard_token}"}) as guard_http, \
            guard_http.ws_connect(f"{daemon.url}/ws") as flood:
        for n in range(5000):
            await flood.send_str(f'{{"type": "watch", "alarm_id": {n % 7}}}')
        # The flooder is cut off; the admin's socket stays, and sees the next event.
        closed = await flood.receive(timeout=10)
        while closed.type == aiohttp.WSMsgType.TEXT:
            closed = await flood.receive(timeout=10)
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == aiohttp.WSCloseCode.POLICY_VIOLATION
        assert (await daemon.send(sample("swann-nvr-human.eml")))["data"][0] == 250
        message = await admin_ws.receive_json(timeout=10)
        while message["type"] == "alarm.viewers":
            message = await admin_ws.receive_json(timeout=10)
        assert message["type"] == "event.created"
    assert not admin_ws.closed or admin_ws.close_code != aiohttp.WSCloseCode.TRY_AGAIN_LATER
    replay = bus.since(seq_before)
    assert replay is not None and [m.type for m in replay] == ["event.created", "event.created"]


async def next_viewers(live: aiohttp.ClientWebSocketResponse) -> tuple[int, list[str]]:
    """The next ``alarm.viewers`` message a socket gets."""
    while (message := await live.receive_json(timeout=10))["type"] != "alarm.viewers":
        pass
    return message["data"]["alarm_id"], message["data"]["users"]


async def received_until_next_event(live: aiohttp.ClientWebSocketResponse) -> list[tuple[int, list[str]]]:
    """The ``alarm.viewers`` messages a socket got before the next ``event.created`` (sent as a marker: the
    socket's messages arrive in order, so everything told before it has arrived by then)."""
    seen = []
    while (message := await live.receive_json(timeout=10))["type"] != "event.created":
        if message["type"] == "alarm.viewers":
            seen.append((message["data"]["alarm_id"], message["data"]["users"]))
    return seen


async def test_viewers_are_told_to_the_viewers_and_only_when_they_change(daemon: Daemon) -> None:
    await daemon.add_user("guard1", "guard")
    await daemon.add_user("guard2", "guard")
    sockets = []
    async with contextlib.AsyncExitStack() as stack:
        for name in ("guard1", "guard2", "guard1"):
            http = await stack.enter_async_context(aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {await daemon.token(name)}"}))
            sockets.append(await stack.enter_async_context(http.ws_connect(f"{daemon.url}/ws")))
        first, second, bystander = sockets
        await first.send_str('{"type": "watch", "alarm_id": 3}')
        assert await next_viewers(first) == (3, ["guard1"])  # taken: the other guard's watching comes after it
        for _ in range(10):
            await second.send_str('{"type": "watch", "alarm_id": 3}')
        await second.send_str('{"type": "watch", "alarm_id": 4}')  # one socket's messages are taken in order
        assert (await daemon.send(sample("reolink-person.eml")))["data"][0] == 250
        assert await received_until_next_event(first) == [(3, ["guard1", "guard2"]), (3, ["guard1"])]
        assert await received_until_next_event(second) == [(3, ["guard1", "guard2"]), (4, ["guard2"])]
        assert await received_until_next_event(bystander) == []


async def wait_closed(live: aiohttp.ClientWebSocketResponse, within: float) -> int | None:
    async with asyncio.timeout(within):
        while True:
            message = await live.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return live.close_code


async def test_a_socket_ends_with_its_session(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ws, "SESSION_CHECK_INTERVAL", 0.3)
    async with running(config) as services:
        daemon = Daemon(services)
        await daemon.add_user("guard1", "guard")
        # The session is deleted behind the daemon's back, as `vmond user passwd` does from the command line.
        async with browser_session() as http:
            await log_in(daemon, http, "guard1")
            async with http.ws_connect(f"{daemon.url}/ws", origin=daemon.url) as live:
                await daemon.services.db.write(lambda: Session.delete().execute())
                assert await wait_closed(live, 5) == ws.WS_SIGNED_OUT
        # A session that expires while its socket is open.
        async with browser_session() as http:
            await log_in(daemon, http, "guard1")
            async with http.ws_connect(f"{daemon.url}/ws", origin=daemon.url) as live:
                await daemon.services.db.write(lambda: Session.update(expires_at=utcnow()).execute())
                assert await wait_closed(live, 5) == ws.WS_SIGNED_OUT


async def test_logout_with_a_bearer_token_revokes_it(daemon: Daemon) -> None:
    await daemon.add_user("guard1", "guard")
    token = await daemon.token("guard1")
    other = await daemon.token("guard1")
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http, http.ws_connect(f"{daemon.url}/ws") as live:
        async with http.post(f"{daemon.url}/logout", allow_redirects=False) as response:
            assert response.status == 204
        assert await wait_closed(live, 5) == ws.WS_SIGNED_OUT
    status, _ = await daemon.api("GET", "/api/events", token)
    assert status == 401
    status, _ = await daemon.api("GET", "/api/events", other)  # only that token
    assert status == 200
    assert await daemon.services.db.read(lambda: Session.select().where(
        Session.token_hash == auth.token_hash(token)).count()) == 0


def test_a_repeated_loop_error_is_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    from vmond.daemon import QuietLoopErrors

    loop = asyncio.new_event_loop()
    try:
        handler = QuietLoopErrors(interval=60)
        loop.set_exception_handler(handler)
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            for _ in range(10_000):
                loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                             "exception": OSError(24, "Too many open files")})
    finally:
        loop.close()
    assert len([r for r in caplog.records if "out of system resource" in r.getMessage()]) == 1


def warnings_of(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno >= logging.WARNING]


async def test_what_clients_send_cannot_flood_the_log(guarded: Daemon, opened: list[socket.socket],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    caplog.set_level(logging.INFO)
    # A thousand host names on one connection (each answered 421), malformed requests, refused connections from
    # many addresses: each kind is said a few times at most, with a count.
    [sock] = await open_silent(opened, "127.0.0.1", guarded.web_port, 1)
    await loop.sock_sendall(sock, b"".join(b"GET /api/health HTTP/1.1\r\nHost: e%d.example\r\n\r\n" % n
                                           for n in range(1000)))
    received = b""
    while received.count(b"HTTP/1.1 421") < 1000:
        received += await loop.sock_recv(sock, 65536)
    for n in range(200):
        [bad] = await open_silent(opened, f"127.0.2.{n % 250 + 1}", guarded.web_port, 1)
        await loop.sock_sendall(bad, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n")
        assert (await closed_by_server(bad, 5)).split(b"\r\n")[0].endswith(b" 400 Bad Request")
    for n in range(50):  # six from each of fifty addresses: one more than each may have
        await open_silent(opened, f"127.0.3.{n + 1}", guarded.web_port, 6)
    assert len(warnings_of(caplog, "vmond.web.hosts")) <= 2
    assert len([r for r in caplog.records if r.name == "aiohttp.server"]) <= 2
    assert 1 <= len(warnings_of(caplog, "vmond.web.connections")) <= 2

