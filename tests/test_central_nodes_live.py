"""Several central nodes on one PostgreSQL (issue 19), as ``vmond run`` processes: what is done on one node shows
on the WebSockets of the other within a second, and a browser's session works on every node, as a load balancer
without sticky sessions moves it."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from centralsite import Central, central_nodes, edge, poll  # noqa: F401 - fixtures
from conftest import PASSWORD, Daemon, distinct, sample
from mosquitto import Mosquitto

pytestmark = pytest.mark.usefixtures("quick_mqtt")
MAIL = "hikvision-ipc-intrusion.eml"
ARRIVAL = 1.0  # seconds from an action on one node to its message on another node's WebSocket


@pytest.fixture
def nodes(tmp_path: Path, broker: Mosquitto, postgres_url: str) -> Iterator[list[Central]]:
    with central_nodes(tmp_path, broker.port, postgres_url) as nodes:
        yield nodes


async def _receive_until(ws: aiohttp.ClientWebSocketResponse, type_: str, timeout: float,
                         **data: Any) -> dict[str, Any]:
    """The first message of *type_* (whose data has the items *data*) on *ws* within *timeout* seconds."""
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive_json()
            if message["type"] == type_ and all(message["data"].get(k) == v for k, v in data.items()):
                return message


async def _an_event_on_both(edge: Daemon, nodes: list[Central]) -> int:  # noqa: F811
    await edge.send(sample(MAIL))
    for node in nodes:
        events = await poll(lambda node=node: node.list("/api/events", "events"), "the site's event on a node")
    return int(events[0]["id"])


async def test_a_websocket_on_node_a_sees_an_action_taken_on_node_b(
        edge: Daemon, nodes: list[Central]) -> None:  # noqa: F811
    a, b = nodes
    event_id = await _an_event_on_both(edge, nodes)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {a.token}"}) as http, \
            http.ws_connect(f"{a.url}/ws") as ws:
        status, command = await b.call("POST", f"/api/events/{event_id}/dismiss")
        acted = loop.time()
        assert status == 202, command
        created = await _receive_until(ws, "command.created", ARRIVAL)
        assert loop.time() - acted < ARRIVAL
        assert created["data"]["id"] == command["command"]["id"] and created["data"]["action"] == "dismiss"
        # The site applies it; whichever node mirrors the answer, node A's dashboards see the event dismissed.
        await _receive_until(ws, "event.updated", 10, id=event_id, status="dismissed")
    bridge = (await a.get("/api/health"))["bridge"]
    assert bridge["listening"] is True and bridge["received"] >= 1 and bridge["dropped"] == 0, bridge


async def _log_in(http: aiohttp.ClientSession, node: Central) -> str:
    """Sign in on *node* through the form, as a browser; the session's CSRF token from the wall page."""
    async with http.get(f"{node.url}/login") as response:
        form_token = re.search(r'name="csrf_token" value="([^"]+)"', await response.text())
        assert form_token
    async with http.post(f"{node.url}/login", headers={"Origin": node.url},
                         data={"username": "admin", "password": PASSWORD, "csrf_token": form_token.group(1),
                               "next": "/"}) as response:
        assert response.status == 200 and response.url.path == "/", await response.text()
    async with http.get(f"{node.url}/") as response:
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', await response.text())
        assert csrf
    return csrf.group(1)


async def test_a_browser_session_works_on_every_node_and_ends_on_every_node(
        edge: Daemon, nodes: list[Central]) -> None:  # noqa: F811
    a, b = nodes
    event_id = await _an_event_on_both(edge, nodes)
    # One cookie jar for both nodes, as one browser behind a load balancer (cookies do not depend on the port).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        csrf = await _log_in(http, a)
        async with http.get(f"{a.url}/") as response:
            page = await response.text()
        seq = re.search(r'data-seq="(\d+)"', page)
        bus = re.search(r'data-bus="([0-9a-f]+)"', page)
        assert seq and bus
        # Node B knows the session: its pages, and a CSRF-checked action with the token node A gave.
        async with http.get(f"{b.url}/") as response:
            assert response.status == 200 and response.url.path == "/"
        async with http.post(f"{b.url}/api/events/{event_id}/dismiss",
                             headers={"X-CSRF-Token": csrf, "Origin": b.url}) as response:
            assert response.status == 202, await response.text()
        # The page's live link moved to node B: node A's sequence numbers mean nothing there, so a resync.
        async with http.ws_connect(f"{b.url}/ws?since={seq.group(1)}&bus={bus.group(1)}", origin=b.url) as ws:
            resync = await ws.receive_json(timeout=5)
            assert resync["type"] == "resync" and resync["bus"] != bus.group(1)
            # Signing out on node A ends the session on node B: its requests at once, its socket soon.
            cookie = next(c.value for c in http.cookie_jar if c.key == "vmond_session")
            async with http.post(f"{a.url}/logout", headers={"X-CSRF-Token": csrf, "Origin": a.url},
                                 allow_redirects=False) as response:
                assert response.status == 303
            closed = await _receive_close(ws, 15)
            assert closed == 4401
    # The cookie as it was (the browser dropped it at sign-out; someone who copied it still holds it).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http, \
            http.get(f"{b.url}/api/events", headers={"Cookie": f"vmond_session={cookie}"}) as response:
        assert response.status == 401


async def _receive_close(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> int | None:
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return ws.close_code


async def test_after_node_b_is_killed_a_browser_on_node_a_sees_every_change_once(
        edge: Daemon, nodes: list[Central]) -> None:  # noqa: F811
    a, b = nodes
    mails = 16
    created: list[int] = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {a.token}"}) as http, \
            http.ws_connect(f"{a.url}/ws") as ws:

        async def collect() -> None:
            async for frame in ws:
                message = frame.json()
                if message["type"] == "event.created":
                    created.append(message["data"]["id"])

        reader = asyncio.create_task(collect())
        try:
            for n in range(mails):
                if n == mails // 2:
                    assert b.process.popen is not None
                    b.process.popen.kill()  # SIGKILL: no goodbye
                    b.process.popen.wait()
                assert (await edge.send(distinct(sample(MAIL), n)))["data"][0] == 250
                await edge.wait_idle()  # one event per mail, not one coalesced burst
            events = await poll(lambda: _all_events(a, mails), "every event on node A", timeout=30)
            ids = sorted(event["id"] for event in events)

            async def all_created() -> bool:
                return sorted(created) == ids

            await poll(all_created, "every event.created on node A's socket", timeout=10)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    assert len(created) == len(set(created)) == mails  # each once


async def _all_events(node: Central, count: int) -> list[dict[str, Any]] | None:
    events = await node.list(f"/api/events?status=all&limit={count * 2}", "events")
    return events if len(events) >= count else None


async def test_who_has_an_alarm_open_is_told_across_the_nodes(edge: Daemon, nodes: list[Central]) -> None:  # noqa: F811
    a, b = nodes
    edge_token = await edge.token()
    await edge.send(sample(MAIL))
    await edge.wait_idle()
    _, edge_events = await edge.api("GET", "/api/events", edge_token)
    status, _ = await edge.api("POST", f"/api/events/{edge_events['events'][0]['id']}/alarm", edge_token)
    assert status == 201
    [alarm] = await poll(lambda: a.list("/api/alarms", "alarms"), "the site's alarm on the central")
    status, _ = await a.call("POST", "/api/users", {"username": "guard2", "password": PASSWORD, "role": "guard"})
    assert status == 201
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{b.url}/api/token", json={"username": "guard2", "password": PASSWORD}) as response:
            guard2 = (await response.json())["access_token"]
        async with http.ws_connect(f"{a.url}/ws", headers={"Authorization": f"Bearer {a.token}"}) as on_a, \
                http.ws_connect(f"{b.url}/ws", headers={"Authorization": f"Bearer {guard2}"}) as on_b:
            await on_a.send_json({"type": "watch", "alarm_id": alarm["id"]})
            await _receive_until(on_a, "alarm.viewers", 5, users=["admin"])
            await on_b.send_json({"type": "watch", "alarm_id": alarm["id"]})
            # Each sees the other, though they are connected to different nodes.
            await _receive_until(on_b, "alarm.viewers", ARRIVAL * 2, users=["admin", "guard2"])
            await _receive_until(on_a, "alarm.viewers", ARRIVAL * 2, users=["admin", "guard2"])
        # guard2 closed the page on node B: node A's viewer is told.
        async with http.ws_connect(f"{a.url}/ws", headers={"Authorization": f"Bearer {a.token}"}) as again:
            await again.send_json({"type": "watch", "alarm_id": alarm["id"]})
            await _receive_until(again, "alarm.viewers", 5, users=["admin"])
