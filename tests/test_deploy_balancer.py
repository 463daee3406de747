"""deploy/central/'s balancers in front of two real central nodes: a login through nginx or HAProxy (their shipped
files), the WebSocket through it, then the node the browser used is killed: the same browser session (cookie,
CSRF token, no new login) goes on through the balancer on the other node, WebSocket included."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from centralsite import write_node_config
from conftest import PASSWORD
from daemon_process import DaemonProcess, process_with_admin
from helpers import free_port
from mosquitto import Mosquitto, TlsFiles, make_tls_files
from proxies import NODES_NAME, Proxy


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    """One CA; a certificate for 127.0.0.1 and the nodes' common name, used by both nodes and the balancer."""
    return make_tls_files(tmp_path / "tls", names=(NODES_NAME,))




class Browser:
    """An operator's browser: the session cookie, the CSRF token of its pages, its Origin, the WebSocket."""

    def __init__(self, url: str, ca: Path) -> None:
        self.url = url
        context = ssl.create_default_context(cafile=str(ca))
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                          connector=aiohttp.TCPConnector(ssl=context, force_close=True),
                                          timeout=aiohttp.ClientTimeout(total=30))
        self.origin = {"Origin": url}
        self.csrf = ""

    async def log_in(self) -> None:
        async with self.http.get(f"{self.url}/login") as response:
            assert response.status == 200, await response.text()
            form = re.search(r'name="csrf_token" value="([^"]+)"', await response.text())
        assert form
        async with self.http.post(f"{self.url}/login", headers=self.origin, allow_redirects=False,
                                  data={"username": "admin", "password": PASSWORD, "csrf_token": form[1]}) as response:
            assert response.status == 303, await response.text()
        self.csrf = await self.page_csrf()

    async def page_csrf(self) -> str:
        async with self.http.get(f"{self.url}/") as response:
            assert response.status == 200 and str(response.url) == f"{self.url}/", response.url
            token = re.search(r'name="csrf-token" content="([^"]+)"', await response.text())
        assert token, "the wall was not shown: not signed in"
        return token[1]

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(f"{self.url}{path}") as response:
            return response.status, await response.json(content_type=None)

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        async with self.http.post(f"{self.url}{path}", json=body,
                                  headers={**self.origin, "X-CSRF-Token": self.csrf}) as response:
            return response.status, await response.json(content_type=None)

    @contextlib.asynccontextmanager
    async def websocket(self) -> Any:
        async with self.http.ws_connect(f"{self.url.replace('https', 'wss')}/ws", headers=self.origin,
                                        heartbeat=None) as ws:
            yield ws

    async def close(self) -> None:
        await self.http.close()
        # aiohttp < 4 closes TLS transports a moment after the session (its "graceful shutdown" advice): wait for
        # them, or they are collected unclosed after the test's loop has gone
        await asyncio.sleep(0.25)


async def pong(ws: aiohttp.ClientWebSocketResponse) -> None:
    """The socket answers: a "ping" from the browser gets the node's pong."""
    await ws.send_str("ping")
    while True:
        message = await asyncio.wait_for(ws.receive(), 10)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        if json.loads(message.data).get("type") == "pong":
            return


class Nodes:
    """Two central nodes from the shipped configurations, sharing one PostgreSQL database (logged in with a
    password from a file, as shipped), on fixed ports."""

    def __init__(self, tmp_path: Path, broker: Mosquitto, tls: TlsFiles, database: tuple[str, Path]) -> None:
        self.ports = (free_port(), free_port())
        url, password_file = database
        self.configs = [write_node_config(name, tmp_path / f"node-{name}", broker_port=broker.port, web_port=port,
                                          certificate=tls.server_cert, key=tls.server_key, database=url,
                                          password_file=password_file)
                        for name, port in zip("ab", self.ports, strict=True)]


@contextlib.contextmanager
def two_nodes(nodes: Nodes) -> Iterator[tuple[DaemonProcess, DaemonProcess]]:
    with process_with_admin(nodes.configs[0].parent, nodes.configs[0]) as a, \
            process_with_admin(nodes.configs[1].parent, nodes.configs[1], admin=False) as b:
        yield a, b


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
async def test_a_browser_session_moves_to_the_other_node(kind: str, tmp_path: Path, broker: Mosquitto,
                                                          tls: TlsFiles, postgres_password_url: tuple[str, Path]
                                                          ) -> None:
    nodes = Nodes(tmp_path, broker, tls, postgres_password_url)
    proxy = Proxy(kind, tmp_path / kind, nodes.ports, tls)
    with two_nodes(nodes) as (a, b):
        await asyncio.to_thread(a.start)  # only node a is up: the login and the WebSocket land on it
        proxy.start()
        browser = Browser(proxy.url, tls.ca)
        try:
            await until_served(browser, "/api/health")
            await browser.log_in()
            status, body = await browser.get("/api/sites")
            assert status == 200 and body == {"sites": []}, body
            async with browser.websocket() as ws:
                await pong(ws)
                # node b comes up; the balancer finds it (nginx: by trying it; HAProxy: its health check)
                first = await started_at(browser)
                await asyncio.sleep(1.0)  # so that the nodes' start times differ by more than the test's margin
                await asyncio.to_thread(b.start)
                await until_both_serve(browser, kind, first)
                # node a dies: its WebSocket closes, and the browser reconnects through the balancer
                assert a.popen is not None
                a.popen.send_signal(signal.SIGKILL)
                a.popen.wait(10)
                closed = await asyncio.wait_for(ws.receive(), 30)
                assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                       aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR), closed
            # the same cookie and CSRF token on node b, the only one left: no new login
            status, body = await browser.get("/api/sites")
            assert status == 200 and body == {"sites": []}, body
            assert await browser.page_csrf() == browser.csrf
            async with browser.websocket() as ws:
                await pong(ws)
            # a state-changing request: CSRF and Origin pass on b as they did on a (the session is b's now too)
            status, body = await browser.post("/api/events/dismiss", {"ids": []})
            assert status < 500 and status != 403, (status, body)
            status, _ = await browser.get("/api/health")
            assert status == 200
        finally:
            await browser.close()
            proxy.stop()
        assert b.stop() == 0


async def until_served(browser: Browser, path: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        with contextlib.suppress(aiohttp.ClientError):
            status, _ = await browser.get(path)
            if status == 200:
                return
        assert asyncio.get_running_loop().time() < deadline, f"{path} not served through the balancer"
        await asyncio.sleep(0.1)


async def started_at(browser: Browser) -> float:
    """When the node that answered started, on this loop's clock (from its uptime)."""
    status, body = await browser.get("/api/health")
    assert status == 200, body
    return asyncio.get_running_loop().time() - float(body["uptime_s"])


async def until_both_serve(browser: Browser, kind: str, first: float, timeout: float = 20.0) -> None:
    """Until a request through the balancer reaches a node that started at another time than *first*."""
    deadline = asyncio.get_running_loop().time() + timeout
    while abs(await started_at(browser) - first) < 0.5:
        assert asyncio.get_running_loop().time() < deadline, f"{kind} does not send requests to the new node"
        await asyncio.sleep(0.1)
