"""The dashboard and API over real HTTP: first-run setup, sessions, tokens, roles, CSRF, media, WebSocket."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from conftest import BASE_CONFIG, PASSWORD, Daemon, sample, write_config
from yarl import URL

from vmond.config import Config
from vmond.ingest.mailparse import parse_mail
from vmond.reload import reload_accounts
from vmond.store.events import list_events
from vmond.web.app import create_app
from vmond.web.keys import config_of

PROTECTED = [
    ("GET", "/api/events"),
    ("GET", "/api/events/1"),
    ("POST", "/api/events/1/dismiss"),
    ("GET", "/api/smtp/refusals"),
    ("GET", "/media/1"),
    ("GET", "/media/1/thumbnail"),
    ("GET", "/ws"),
]


def browser_session(verify_tls: bool = True) -> aiohttp.ClientSession:
    # unsafe: keep cookies for an IP-address host, as a browser does for http://127.0.0.1:8080
    connector = None if verify_tls else aiohttp.TCPConnector(ssl=False)  # an appliance's self-signed certificate
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), connector=connector)


async def csrf_of(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as response:
        html = await response.text()
    match = re.search(r'name="csrf_token" value="([^"]+)"', html) or re.search(
        r'name="csrf-token" content="([^"]+)"', html)
    assert match, html
    return match.group(1)


async def log_in(daemon: Daemon, http: aiohttp.ClientSession, username: str = "admin") -> str:
    """Sign in through the form like a browser; returns the session's CSRF token from the wall page."""
    token = await csrf_of(http, f"{daemon.url}/login")
    async with http.post(f"{daemon.url}/login", data={"username": username, "password": PASSWORD,
                                                      "csrf_token": token, "next": "/"},
                         headers={"Origin": daemon.url}) as response:
        assert response.status == 200 and response.url.path == "/", await response.text()
    return await csrf_of(http, f"{daemon.url}/")


async def test_health_needs_no_login(daemon: Daemon) -> None:
    status, body = await daemon.api("GET", "/api/health", None)
    assert status == 200
    assert body["status"] == "ok" and body["version"]
    assert body["smtp"]["listening"] and body["database"]["ok"] and body["database"]["engine"] == "sqlite"


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_everything_else_answers_401_without_credentials(daemon: Daemon, method: str, path: str) -> None:
    status, _ = await daemon.api(method, path, None)
    assert status == 401
    status, _ = await daemon.api(method, path, "not-a-token")
    assert status == 401


async def test_every_route_declares_who_may_use_it(daemon: Daemon) -> None:
    app = create_app(daemon.config, daemon.services)
    for route in app.router.routes():
        if route.resource is not None and route.resource.canonical.startswith("/static"):
            continue
        assert getattr(route.handler, "vmond_access", None) in ("public", "guard", "supervisor", "admin"), route


async def test_no_fixed_path_is_hidden_behind_an_earlier_pattern(daemon: Daemon) -> None:
    """aiohttp 3.8 tries the routes in the order they were added: ``/accounts/new`` must come before
    ``/accounts/{account_id}``, which matches it too. Newer aiohttp finds fixed paths first: only this shows it."""
    routes = list(create_app(daemon.config, daemon.services).router.routes())

    def matches(route: web.AbstractRoute, path: str) -> bool:
        info = route.get_info()
        return info.get("path") == path or ("pattern" in info and info["pattern"].fullmatch(path) is not None)

    for route in routes:
        if (path := route.get_info().get("path")) is not None:
            assert next(r for r in routes if r.method == route.method and matches(r, path)) is route, route


async def test_after_a_reload_the_web_reads_the_daemons_configuration(daemon: Daemon, tmp_path: Path) -> None:
    """One source of truth: a SIGHUP replaces ``services.config``; the app keeps no copy that would go stale."""
    app = create_app(daemon.config, daemon.services)
    write_config(tmp_path, accounts=[{**BASE_CONFIG["accounts"][0], "address": "2 New Road"}])
    assert (await reload_accounts(daemon.services)).startswith("reloaded 1 account(s)")
    assert daemon.services.config.accounts[0].address == "2 New Road"
    copies = [key for key in app if isinstance(app[key], Config)]
    assert copies == [] and config_of(app) is daemon.services.config


async def test_first_run_setup_creates_the_admin_once(daemon: Daemon) -> None:
    async with browser_session() as http:
        async with http.get(f"{daemon.url}/", allow_redirects=False) as response:
            assert response.status == 303 and response.headers["Location"] == "/setup"
        token = await csrf_of(http, f"{daemon.url}/setup")
        async with http.post(f"{daemon.url}/setup", allow_redirects=False, headers={"Origin": daemon.url},
                             data={"username": "boss", "password": "short", "csrf_token": token}) as response:
            assert response.status == 400 and "needs at least 8 characters" in await response.text()
        async with http.post(f"{daemon.url}/setup", allow_redirects=False, headers={"Origin": daemon.url},
                             data={"username": "boss", "password": PASSWORD, "csrf_token": token}) as response:
            assert response.status == 303
            cookie = response.cookies["vmond_session"]
            assert cookie["httponly"] and cookie["samesite"] == "Lax"
        async with http.get(f"{daemon.url}/") as response:
            page = await response.text()
            assert response.status == 200 and "boss · admin" in page
        async with http.get(f"{daemon.url}/setup") as response:
            assert response.status == 404
    # A second setup attempt (another browser, no cookie) is gone too.
    status, _ = await daemon.api("POST", "/setup", None, data={"username": "eve", "password": PASSWORD})
    assert status == 404
    assert await daemon.token("boss", PASSWORD)


async def test_setup_from_a_foreign_origin_is_refused(daemon: Daemon) -> None:
    async with browser_session() as http:
        token = await csrf_of(http, f"{daemon.url}/setup")
        async with http.post(f"{daemon.url}/setup", headers={"Origin": "http://evil.example"},
                             data={"username": "eve", "password": PASSWORD, "csrf_token": token}) as response:
            assert response.status == 403


async def test_login_wrong_password_and_rate_limit(daemon: Daemon) -> None:
    await daemon.add_user("guard1", "guard")
    for _ in range(10):
        status, body = await daemon.api("POST", "/api/token", None, json={"username": "guard1", "password": "nope"})
        assert status == 401
    status, body = await daemon.api("POST", "/api/token", None, json={"username": "guard1", "password": PASSWORD})
    assert status == 429, body
    status, _ = await daemon.api("POST", "/api/token", None, json={"username": "guard1"})
    assert status == 400


async def test_token_gives_bearer_access(daemon: Daemon) -> None:
    await daemon.add_user()
    status, body = await daemon.api("POST", "/api/token", None, json={"username": "admin", "password": PASSWORD})
    assert status == 200
    assert body["token_type"] == "bearer" and body["expires_in"] > 0 and len(body["access_token"]) > 30
    status, events = await daemon.api("GET", "/api/events", body["access_token"])
    assert status == 200 and events == {"events": []}


async def test_cookie_requests_need_the_csrf_token(daemon: Daemon) -> None:
    await daemon.add_user("guard1", "guard")
    assert (await daemon.send(sample("amcrest-tamper.eml")))["data"][0] == 250
    await daemon.wait_idle()
    async with browser_session() as http:
        csrf = await log_in(daemon, http, "guard1")
        url = f"{daemon.url}/api/events/1/dismiss"
        async with http.post(url) as response:
            assert response.status == 403
        async with http.post(url, headers={"X-CSRF-Token": "wrong"}) as response:
            assert response.status == 403
        async with http.post(url, headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"}) as response:
            assert response.status == 403
        async with http.post(url, headers={"X-CSRF-Token": csrf, "Origin": daemon.url}) as response:
            assert response.status == 200
            assert (await response.json())["status"] == "dismissed"


async def test_dismiss_and_list(daemon: Daemon) -> None:
    await daemon.add_user("guard1", "guard")
    token = await daemon.token("guard1")
    for name in ("amcrest-tamper.eml", "swann-nvr-human.eml"):
        assert (await daemon.send(sample(name)))["data"][0] == 250
    await daemon.wait_idle()
    status, body = await daemon.api("GET", "/api/events", token)
    first, second = body["events"]  # newest first
    assert first["id"] > second["id"]
    status, dismissed = await daemon.api("POST", f"/api/events/{second['id']}/dismiss", token)
    assert status == 200 and dismissed["status"] == "dismissed"
    status, again = await daemon.api("POST", f"/api/events/{second['id']}/dismiss", token)
    assert status == 200 and again["status"] == "dismissed"  # a second guard's click is harmless
    status, body = await daemon.api("GET", "/api/events", token)
    assert [e["id"] for e in body["events"]] == [first["id"]]
    status, body = await daemon.api("GET", "/api/events?status=dismissed", token)
    assert [e["id"] for e in body["events"]] == [second["id"]]
    status, body = await daemon.api("GET", "/api/events?status=all&limit=1", token)
    assert len(body["events"]) == 1
    status, _ = await daemon.api("GET", "/api/events?status=bogus", token)
    assert status == 400
    status, _ = await daemon.api("GET", "/api/events/999", token)
    assert status == 404


async def test_refusals_need_a_supervisor(daemon: Daemon) -> None:
    await daemon.add_user("guard1", "guard")
    status, body = await daemon.api("GET", "/api/smtp/refusals", await daemon.token("guard1"))
    assert status == 403


async def test_media_served_by_id_to_signed_in_users(daemon: Daemon) -> None:
    raw = sample("hikvision-ipc-intrusion.eml")
    assert (await daemon.send(raw))["data"][0] == 250
    await daemon.wait_idle()
    await daemon.add_user("guard1", "guard")
    token = await daemon.token("guard1")
    status, event = await daemon.api("GET", "/api/events/1", token)
    originals = [hashlib.sha256(a.data).hexdigest() for a in parse_mail(raw).images]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for image, digest in zip(event["images"], originals, strict=True):
            async with http.get(daemon.url + image["url"]) as response:
                assert response.status == 200 and response.content_type == "image/jpeg"
                assert hashlib.sha256(await response.read()).hexdigest() == digest
            async with http.get(daemon.url + image["thumbnail_url"]) as response:
                body = await response.read()
                assert response.status == 200 and body[:2] == b"\xff\xd8" and len(body) < 60_000
        async with http.get(f"{daemon.url}/media/9999") as response:
            assert response.status == 404
        # Media are addressed by id only: nothing that looks like a path reaches the file system.
        async with http.get(URL(f"{daemon.url}/media/%2E%2E%2Fvmond.db", encoded=True)) as response:
            assert response.status == 404


async def test_camera_text_is_escaped_on_the_wall(daemon: Daemon) -> None:
    hostile = (b"Subject: <script>alert(1)</script></script><img src=x onerror=alert(2)>\r\n"
               b"From: cam@cam.lan\r\n\r\nmotion\r\n")
    assert (await daemon.send(hostile))["data"][0] == 250
    await daemon.wait_idle()
    await daemon.add_user("guard1", "guard")
    async with browser_session() as http:
        await log_in(daemon, http, "guard1")
        async with http.get(f"{daemon.url}/") as response:
            page = await response.text()
            assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "\\u003cscript\\u003ealert(1)" in page  # the subject is in the page, as inert JSON


async def test_websocket_streams_new_events_and_replays(daemon: Daemon) -> None:
    await daemon.add_user("guard1", "guard")
    token = await daemon.token("guard1")
    headers = {"Authorization": f"Bearer {token}"}
    start = daemon.services.bus.last_seq
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.ws_connect(f"{daemon.url}/ws") as ws:
            assert (await daemon.send(sample("swann-nvr-human.eml")))["data"][0] == 250
            message = await ws.receive_json(timeout=5)
            assert message["type"] == "event.created" and message["seq"] == start + 1
            assert message["data"]["camera"]["name"] == "Front Door"
            event_id = message["data"]["id"]
            status, _ = await daemon.api("POST", f"/api/events/{event_id}/dismiss", token)
            message = await ws.receive_json(timeout=5)
            assert message["type"] == "event.dismissed" and message["data"]["id"] == event_id
        # A client that was away asks for what it missed.
        async with http.ws_connect(f"{daemon.url}/ws?since={start}") as ws:
            replayed = [await ws.receive_json(timeout=5) for _ in range(2)]
            assert [m["type"] for m in replayed] == ["event.created", "event.dismissed"]
        # Too old (or from another boot): the server says resync.
        async with http.ws_connect(f"{daemon.url}/ws?since={start - 1000}") as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "resync"


async def test_websocket_from_a_foreign_origin_is_refused(daemon: Daemon) -> None:
    await daemon.add_user("guard1", "guard")
    async with browser_session() as http:
        await log_in(daemon, http, "guard1")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with http.ws_connect(f"{daemon.url}/ws", origin="http://evil.example"):
                pass
        assert refused.value.status == 403
        async with http.ws_connect(f"{daemon.url}/ws", origin=daemon.url) as ws:
            assert (await daemon.send(sample("reolink-person.eml")))["data"][0] == 250
            assert (await ws.receive_json(timeout=5))["type"] == "event.created"


async def test_test_events_stay_off_the_wall(daemon: Daemon) -> None:
    test_mail = (b"Subject: Test E-mail\r\nFrom: cam@cam.lan\r\n\r\n"
                 b"If you receive this e-mail you have successfully set up and tested the e-mail alert from your IPC"
                 b"\r\n")
    assert (await daemon.send(test_mail))["data"][0] == 250
    await daemon.wait_idle()
    stored = await daemon.services.db.read(list_events, "monitor.local", "all", 10, True)
    assert len(stored) == 1 and stored[0]["is_test"]
    await daemon.add_user("guard1", "guard")
    status, body = await daemon.api("GET", "/api/events", await daemon.token("guard1"))
    assert body == {"events": []}


async def test_camera_pages_for_supervisors(daemon: Daemon) -> None:
    assert (await daemon.send(sample("amcrest-tamper.eml")))["data"][0] == 250
    await daemon.wait_idle()
    await daemon.add_user("installer", "supervisor")
    async with browser_session() as http:
        await log_in(daemon, http, "installer")
        async with http.get(f"{daemon.url}/cameras") as response:
            page = await response.text()
            assert response.status == 200 and "camera-front@monitor.local" in page and "Back Yard" in page
        async with http.get(f"{daemon.url}/cameras/1") as response:
            page = await response.text()
            assert response.status == 200 and "Last SMTP session" in page
        async with http.get(f"{daemon.url}/cameras/999") as response:
            assert response.status == 404
    await daemon.add_user("guard1", "guard")
    async with browser_session() as http:
        await log_in(daemon, http, "guard1")
        async with http.get(f"{daemon.url}/cameras") as response:
            assert response.status == 403


async def test_metrics_in_prometheus_text(daemon: Daemon) -> None:
    assert (await daemon.send(sample("amcrest-tamper.eml")))["data"][0] == 250
    assert (await daemon.send(sample("amcrest-tamper.eml"), to="nobody@monitor.local"))["rcpt"][0] == 550
    await daemon.wait_idle()
    await daemon.add_user("guard1", "guard")
    status, text = await daemon.api("GET", "/metrics", await daemon.token("guard1"))
    assert status == 200
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert values["vmond_smtp_mails_accepted_total"] == "1"
    assert values['vmond_smtp_replies_total{code="550"}'] == "1"
    assert values["vmond_events_created_total"] == "1"
    assert float(values["vmond_disk_free_bytes"]) > 0
    assert "# TYPE vmond_mqtt_outbox_depth gauge" in text
    status, _ = await daemon.api("GET", "/metrics", None)
    assert status == 401


async def test_the_wall_loads_light(daemon: Daemon) -> None:
    """The wall's first load (page, styles, scripts; not the pictures) stays under 100 KB on a guard's phone."""
    await daemon.add_user("guard1", "guard")
    total = 0
    async with browser_session() as http:
        await log_in(daemon, http, "guard1")
        async with http.get(f"{daemon.url}/") as response:
            page = await response.text()
            total += len(page.encode())
        assets = re.findall(r'(?:src|href)="(/static/[^"?]+)', page)
        scripts = [a for a in assets if a.endswith(".js")]
        for script in scripts:  # and what the modules import
            async with http.get(daemon.url + script) as response:
                assets += [f"/static/{name}" for name in re.findall(r'from "\./([\w.]+)"', await response.text())]
        for asset in sorted(set(assets)):
            async with http.get(daemon.url + asset) as response:
                assert response.status == 200, asset
                total += len(await response.read())
    assert {"/static/app.css", "/static/wall.js", "/static/common.js"} <= set(assets)
    assert total < 100_000, total
