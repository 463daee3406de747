"""Attacks on signing in, over real HTTP: huge bodies, parallel guessing, locking users out, open redirects,
deeply nested JSON, and foreign Host headers (the first step of DNS rebinding)."""

from __future__ import annotations

import asyncio
import re
import socket
import tracemalloc
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from conftest import PASSWORD, Daemon, PasswordChecks
from test_web import browser_session, csrf_of, log_in

from vmond.config import Config
from vmond.daemon import running
from vmond.web.throttle import HASH_CONCURRENCY, MAX_ADDRESSES, MAX_NETWORKS, MAX_PAIRS, LoginLimiter


def from_address(address: str, **kwargs: Any) -> aiohttp.ClientSession:
    """A client on another loopback address: to the daemon, another machine on the LAN."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)), **kwargs)


async def token_status(http: aiohttp.ClientSession, daemon: Daemon, username: str, password: str) -> int:
    async with http.post(f"{daemon.url}/api/token", json={"username": username, "password": password}) as response:
        return response.status


async def test_login_bodies_are_small(daemon: Daemon) -> None:
    await daemon.add_user("guard1", "guard")
    huge = "u" * 900_000
    status, body = await daemon.api("POST", "/api/token", None, json={"username": huge, "password": "x"})
    assert status == 413, body
    async with browser_session() as http:
        token = await csrf_of(http, f"{daemon.url}/login")
        async with http.post(f"{daemon.url}/login", data={"username": huge, "password": "x", "csrf_token": token},
                             headers={"Origin": daemon.url}) as response:
            assert response.status == 413
    # A long name that fits the body is refused like any wrong name, and is not put back into the page whole.
    async with browser_session() as http:
        token = await csrf_of(http, f"{daemon.url}/login")
        async with http.post(f"{daemon.url}/login", data={"username": "n" * 10_000, "password": "x",
                                                          "csrf_token": token},
                             headers={"Origin": daemon.url}) as response:
            page = await response.text()
            assert response.status == 401 and "n" * 65 not in page
    # Still fine for the real user.
    status, _ = await daemon.api("POST", "/api/token", None, json={"username": "guard1", "password": PASSWORD})
    assert status == 200


def test_the_limiter_holds_its_memory_whatever_it_is_sent() -> None:
    limiter = LoginLimiter()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(60_000):
            limiter.attempt(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", f"{n}-" + "x" * 900_000)
            limiter.attempt(f"fd00:{n:x}::{n:x}", "admin")
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert limiter.entries <= MAX_ADDRESSES + MAX_PAIRS + MAX_NETWORKS
    assert grown < 4_000_000, f"the limiter took {grown} bytes"


def test_an_ipv6_host_cycling_its_addresses_meets_the_limit_of_its_network() -> None:
    limiter = LoginLimiter()
    refused = [limiter.attempt(f"fd00:1:2:3::{n:x}", "admin").retry_after > 0 for n in range(1000)]
    assert refused.index(True) == 200  # 10 addresses' worth, then the /64 as a whole waits
    assert limiter.attempt("fd00:1:2:4::1", "admin").retry_after == 0  # another network is not affected
    assert limiter.attempt("192.0.2.1", "admin").retry_after == 0


async def test_parallel_guesses_are_counted_before_the_password_check(daemon: Daemon,
                                                                      password_checks: PasswordChecks) -> None:
    await daemon.add_user("guard1", "guard")
    # 30 connections at once: within web.max_connections_per_peer, so every guess reaches the login handler.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=30)) as http:
        statuses = await asyncio.gather(*(token_status(http, daemon, "guard1", f"guess-{n}") for n in range(200)))
    assert statuses.count(401) <= 10, statuses  # the limit for one user from one address
    assert statuses.count(429) >= 190
    assert password_checks.most <= HASH_CONCURRENCY


async def test_a_success_clears_only_its_own_user(daemon: Daemon) -> None:
    await daemon.add_user("alice", "guard")
    await daemon.add_user("bob", "guard")
    async with aiohttp.ClientSession() as http:
        for n in range(19):
            assert await token_status(http, daemon, f"mallory{n % 3}" if n % 2 else "alice", "wrong") == 401
        assert await token_status(http, daemon, "bob", PASSWORD) == 200
        assert await token_status(http, daemon, "carol", "wrong") == 401  # the 20th failure from this address
        assert await token_status(http, daemon, "dave", "wrong") == 429  # bob's success did not reset the count


async def test_no_one_can_lock_a_user_out(daemon: Daemon) -> None:
    await daemon.add_user("guard1", "guard")
    for attacker in ("127.0.0.2", "127.0.0.3"):
        async with from_address(attacker) as http:
            statuses = [await token_status(http, daemon, "guard1", "wrong") for _ in range(10)]
            assert statuses == [401] * 10
            assert await token_status(http, daemon, "guard1", "wrong") == 429
    async with from_address("127.0.0.4") as http:
        assert await token_status(http, daemon, "guard1", PASSWORD) == 200
    async with browser_session() as http:  # the form too, from yet another address
        await log_in(daemon, http, "guard1")


@pytest.mark.parametrize("target", [
    "/%09/evil.example", "//evil.example", "/\\evil.example", "https://evil.example/", "/%0a/evil.example",
    "/\t/evil.example", "http:/evil.example", "/ /evil.example", "/no-such-page", "/static/app.css",
])
async def test_no_redirect_after_login_leaves_the_dashboard(daemon: Daemon, target: str) -> None:
    await daemon.add_user("guard1", "guard")
    async with browser_session() as http:
        async with http.get(f"{daemon.url}/login", params={"next": target}) as response:
            page = await response.text()
        assert re.search(r'name="next" value="([^"]*)"', page).group(1) == "/"
        token = await csrf_of(http, f"{daemon.url}/login")
        async with http.post(f"{daemon.url}/login", allow_redirects=False, headers={"Origin": daemon.url},
                             data={"username": "guard1", "password": PASSWORD, "csrf_token": token,
                                   "next": target}) as response:
            assert response.status == 303 and response.headers["Location"] == "/"
        # Signed in already: the same link goes nowhere else either.
        async with http.get(f"{daemon.url}/login?next={target}", allow_redirects=False) as response:
            assert response.headers["Location"] == "/"


async def test_a_page_of_the_dashboard_is_where_login_returns_to(daemon: Daemon) -> None:
    await daemon.add_user("guard1", "guard")
    async with browser_session() as http:
        async with http.get(f"{daemon.url}/alarms?state=open", allow_redirects=True) as response:
            assert response.url.path == "/login"
            page = await response.text()
        assert 'name="next" value="/alarms?state=open"' in page
        token = await csrf_of(http, f"{daemon.url}/login")
        async with http.post(f"{daemon.url}/login", allow_redirects=False, headers={"Origin": daemon.url},
                             data={"username": "guard1", "password": PASSWORD, "csrf_token": token,
                                   "next": "/alarms?state=open"}) as response:
            assert response.headers["Location"] == "/alarms?state=open"


async def post_json_text(daemon: Daemon, path: str, text: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    async with aiohttp.ClientSession() as http, http.post(f"{daemon.url}{path}", data=text,
                                                          headers=headers) as response:
        return response.status, await response.text()


async def test_deeply_nested_json_is_a_bad_request(daemon: Daemon) -> None:
    await daemon.add_user()
    status, body = await post_json_text(daemon, "/api/token", "[" * 5000 + "]" * 5000)
    assert status == 400, body
    token = await daemon.token()
    status, body = await post_json_text(daemon, "/api/accounts", '{"name": ' + "[" * 50_000 + "]" * 50_000 + "}",
                                        token)
    assert status == 400, body
    status, body = await post_json_text(daemon, "/api/alarms/1/resolve", "[" * 50_000, token)
    assert status in (400, 404), body  # never a 500


async def test_foreign_host_names_are_refused(make_config: Callable[..., Config]) -> None:
    config = make_config(web={"listen": "127.0.0.1:0", "allowed_hosts": ["monitor.example.com", "*.site.example"],
                              "public_url": "https://vmond.example.net:8443/"})
    async with running(config) as services:
        daemon = Daemon(services)
        port = daemon.web_port
        async with aiohttp.ClientSession() as http:
            # A fresh appliance: DNS rebinding would take /setup first.
            for path in ("/setup", "/login", "/api/health"):
                async with http.get(f"{daemon.url}{path}", headers={"Host": "evil.example"}) as response:
                    assert response.status == 421, path
            async with http.post(f"{daemon.url}/setup", headers={"Host": f"evil.example:{port}"},
                                 data={"username": "eve", "password": PASSWORD}) as response:
                assert response.status == 421
            own = socket.gethostname().lower().split(".", 1)[0]
            for host in (f"127.0.0.1:{port}", "localhost", f"[::1]:{port}", "monitor.example.com",
                         f"MONITOR.example.com.:{port}", "cam.site.example", "vmond.example.net:8443",
                         f"{own}:{port}", f"{own.upper()}.local"):
                async with http.get(f"{daemon.url}/api/health", headers={"Host": host}) as response:
                    assert response.status == 200, host
        await daemon.add_user()
        token = await daemon.token()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            async with http.post(f"{daemon.url}/api/events/1/dismiss", headers={"Host": "evil.example"}) as response:
                assert response.status == 421
        async with browser_session() as http:  # a signed-in browser's form post under a foreign name
            csrf = await log_in(daemon, http)
            async with http.post(f"{daemon.url}/logout", data={"csrf_token": csrf}, allow_redirects=False,
                                 headers={"Host": "evil.example", "Origin": "http://evil.example"}) as response:
                assert response.status == 421


async def test_behind_a_trusted_proxy_the_forwarded_address_is_counted(make_config: Callable[..., Config]) -> None:
    """Every browser behind a load balancer arrives from its address: with web.trusted_proxies, one guessing
    client is limited on its own, and the others behind the same proxy still sign in."""
    async with running(make_config(web={"trusted_proxies": ["127.0.0.1/32"]})) as services:
        daemon = Daemon(services)
        await daemon.add_user("guard1", "guard")
        async with from_address("127.0.0.1") as proxy:
            guesser = {"X-Forwarded-For": "198.51.100.7"}
            for _ in range(10):
                async with proxy.post(f"{daemon.url}/api/token", headers=guesser,
                                      json={"username": "guard1", "password": "wrong"}) as response:
                    assert response.status == 401
            # What the client itself put further left changes nothing: the proxy's own entry is the last.
            for spoofed in (guesser, {"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}):
                async with proxy.post(f"{daemon.url}/api/token", headers=spoofed,
                                      json={"username": "guard1", "password": PASSWORD}) as response:
                    assert response.status == 429
            async with proxy.post(f"{daemon.url}/api/token", headers={"X-Forwarded-For": "198.51.100.8"},
                                  json={"username": "guard1", "password": PASSWORD}) as response:
                assert response.status == 200  # another browser behind the same proxy
        # A client that is no trusted proxy cannot choose its address by the header.
        async with from_address("127.0.0.2") as direct:
            for n in range(10):
                async with direct.post(f"{daemon.url}/api/token", headers={"X-Forwarded-For": f"192.0.2.{n}"},
                                       json={"username": "guard1", "password": "wrong"}) as response:
                    assert response.status == 401
            async with direct.post(f"{daemon.url}/api/token", headers={"X-Forwarded-For": "192.0.2.99"},
                                   json={"username": "guard1", "password": PASSWORD}) as response:
                assert response.status == 429
