"""A browser moved between central nodes (issue 19), or reaching one through a proxy that ends TLS.

Sequence numbers are per node: a WebSocket resuming with another node's number is told to resync, with the new
bus's id, instead of being replayed messages it never saw. Behind a proxy, the origin of ``web.public_url`` is
the dashboard's own (login, CSRF-checked posts, the WebSocket), and the cookies are Secure when the browser
came by that https name."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from http.cookies import SimpleCookie

import aiohttp
import pytest
from conftest import PASSWORD, Daemon, sample

from vmond.config import Config
from vmond.daemon import running

PUBLIC = "https://central.example"


async def test_a_sequence_number_of_another_node_gets_a_resync_naming_this_nodes_bus(daemon: Daemon) -> None:
    await daemon.add_user("guard1", "guard")
    token = await daemon.token("guard1")
    bus = daemon.services.bus
    start = bus.last_seq
    assert (await daemon.send(sample("swann-nvr-human.eml")))["data"][0] == 250
    await daemon.wait_idle()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.get(f"{daemon.url}/") as response:
            assert f'data-bus="{bus.id}"' in await response.text()  # the page says whose its data-seq is
        # The same number from this node's own bus: replayed.
        async with http.ws_connect(f"{daemon.url}/ws?since={start}&bus={bus.id}") as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "event.created"
        # From another node (its numbers may well overlap this node's): a resync, and which bus counts now.
        async with http.ws_connect(f"{daemon.url}/ws?since={start}&bus=0123456789abcdef") as ws:
            assert await ws.receive_json(timeout=5) == {"type": "resync", "seq": bus.last_seq, "bus": bus.id}


@pytest.fixture
async def proxied(make_config: Callable[..., Config]) -> AsyncIterator[Daemon]:
    """A dashboard that browsers reach as https://central.example through a proxy ending TLS."""
    async with running(make_config(web={"public_url": PUBLIC})) as services:
        yield Daemon(services)


async def test_behind_a_tls_proxy_the_public_origin_is_the_dashboards_own(proxied: Daemon) -> None:
    await proxied.add_user("guard1", "guard")
    assert (await proxied.send(sample("swann-nvr-human.eml")))["data"][0] == 250
    await proxied.wait_idle()
    proxy = {"Host": "central.example", "Origin": PUBLIC}  # what the proxy passes on from the browser
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.get(f"{proxied.url}/login", headers={"Host": "central.example"}) as response:
            pre = SimpleCookie(response.headers["Set-Cookie"])["vmond_csrf"]
            assert pre["secure"], "the login form's cookie is Secure: the browser came by https"
            form_token = re.search(r'name="csrf_token" value="([^"]+)"', await response.text())
            assert form_token
        async with http.post(f"{proxied.url}/login", allow_redirects=False,
                             headers={**proxy, "Cookie": f"vmond_csrf={pre.value}"},
                             data={"username": "guard1", "password": PASSWORD, "csrf_token": form_token.group(1),
                                   "next": "/"}) as response:
            assert response.status == 303, await response.text()
            session = SimpleCookie(response.headers["Set-Cookie"])["vmond_session"]
            assert session["secure"] and session["httponly"]
        cookie = {"Cookie": f"vmond_session={session.value}"}
        async with http.get(f"{proxied.url}/", headers={"Host": "central.example", **cookie}) as response:
            csrf = re.search(r'name="csrf-token" content="([^"]+)"', await response.text())
            assert response.status == 200 and csrf
        async with http.post(f"{proxied.url}/api/events/1/dismiss",
                             headers={**proxy, **cookie, "X-CSRF-Token": csrf.group(1)}) as response:
            assert response.status == 200, await response.text()
        async with http.ws_connect(f"{proxied.url}/ws", headers={"Host": "central.example", **cookie},
                                   origin=PUBLIC) as ws:
            await ws.send_str("ping")
            assert (await ws.receive_json(timeout=5)) == {"type": "pong"}
        # Another https origin is still foreign; so is the public name on another port.
        for origin in ("https://evil.example", "https://central.example:8443"):
            async with http.post(f"{proxied.url}/api/events/1/dismiss",
                                 headers={**proxy, **cookie, "Origin": origin,
                                          "X-CSRF-Token": csrf.group(1)}) as response:
                assert response.status == 403, origin
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                async with http.ws_connect(f"{proxied.url}/ws", headers={"Host": "central.example", **cookie},
                                           origin=origin):
                    pass
            assert refused.value.status == 403


async def test_the_node_asked_by_its_own_address_keeps_a_plain_cookie(proxied: Daemon) -> None:
    """A guard on the LAN reaching the node itself over http must still be able to sign in: no Secure cookie."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.get(f"{proxied.url}/login") as response:
            assert not SimpleCookie(response.headers["Set-Cookie"])["vmond_csrf"]["secure"]
