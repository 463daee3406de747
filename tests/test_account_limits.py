"""Guards limited to accounts: every route with an id answers 404 for another account's items, every list leaves
them out, the live stream does not carry them; the users API, the command line and migration 10."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import peewee as pw
import pytest
from conftest import BASE_CONFIG, PASSWORD, Daemon, distinct, sample, write_config
from helpers import run_cli

from vmond.config import Config
from vmond.daemon import running
from vmond.store import migrations
from vmond.store.accounts import Invalid, delete_account
from vmond.store.db import open_sqlite
from vmond.store.scope import set_user_accounts
from vmond.store.users import credentials, list_users
from vmond.web.app import create_app

OTHER_ACCOUNT = {"name": "Other Customer", "address": "2 Far Road",
                 "contacts": [{"name": "Otto Keyholder", "phone": "+15550199"}],
                 "cameras": [{"name": "Other Gate", "smtp_address": "camera-other"}]}
# What of the other account must never reach a user limited to the first: its name, its camera, its contact.
OTHER_MARKERS = ("Other Customer", "Other Gate", "camera-other", "Otto Keyholder")
NO_SUCH_ID = 987654


@pytest.fixture
async def two_accounts(make_config: Callable[..., Config]) -> AsyncIterator[Daemon]:
    config = make_config(accounts=[*BASE_CONFIG["accounts"], OTHER_ACCOUNT])
    async with running(config) as services:
        yield Daemon(services)


async def _bearer(daemon: Daemon, username: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {await daemon.token(username)}"}


async def _event_with_alarm(daemon: Daemon, admin: str, camera: str, n: int) -> dict[str, Any]:
    """Two events of *camera*: one left active, one raised as an alarm. Their ids, the alarm's, a media id."""
    ids = {}
    for key, offset in (("active", 0), ("alarmed", 1)):
        assert (await daemon.send(distinct(sample("hikvision-ipc-intrusion.eml"), n + offset),
                                  to=f"{camera}@monitor.local"))["data"][0] == 250
        await daemon.wait_idle()
        _, events = await daemon.api("GET", "/api/events?status=all&limit=500", admin)
        ids[key] = max(e["id"] for e in events["events"])
    status, alarm = await daemon.api("POST", f"/api/events/{ids['alarmed']}/alarm", admin)
    assert status == 201, alarm
    _, event = await daemon.api("GET", f"/api/events/{ids['active']}", admin)
    return {"event_id": ids["active"], "alarm_event_id": ids["alarmed"], "alarm_id": alarm["id"],
            "media_id": event["images"][0]["id"], "camera_id": event["camera"]["id"],
            "account_id": event["account"]["id"]}


async def _setup(daemon: Daemon) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """An admin, the first account's items (mine) and the other's (theirs); a guard and a supervisor limited to
    the first account, created over the users API."""
    await daemon.add_user("root", "admin")
    admin = await daemon.token("root")
    mine = await _event_with_alarm(daemon, admin, "camera-front", 100)
    theirs = await _event_with_alarm(daemon, admin, "camera-other", 200)
    assert mine["account_id"] != theirs["account_id"]
    for name, role in (("guard1", "guard"), ("super1", "supervisor")):
        status, user = await daemon.api("POST", "/api/users", admin, json={
            "username": name, "password": PASSWORD, "role": role, "accounts": [mine["account_id"]]})
        assert status == 201 and user["accounts"] == [mine["account_id"]], user
    return admin, mine, theirs


def _guarded_routes(daemon: Daemon) -> list[tuple[str, str]]:
    """(method, path pattern) of every route that names an event, alarm, media file, camera or account."""
    app = create_app(daemon.config, daemon.services)
    routes = []
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method == "HEAD" or resource.canonical.startswith("/static"):
            continue
        if re.search(r"\{(event|alarm|media|camera|account)_id\}", resource.canonical):
            routes.append((route.method, resource.canonical))
    return routes


def _fill(pattern: str, ids: dict[str, Any]) -> str:
    return re.sub(r"\{([a-z_]+)\}", lambda m: str(ids.get(m[1], 1)), pattern)


async def _answer(http: aiohttp.ClientSession, daemon: Daemon, method: str, path: str) -> tuple[int, bytes]:
    async with http.request(method, daemon.url + path, json={}, allow_redirects=False) as response:
        return response.status, await response.read()


async def test_every_route_with_an_id_answers_404_for_another_accounts_items(two_accounts: Daemon) -> None:
    """Enumerates the router, as the role test does: a route added tomorrow is checked the day it is added."""
    daemon = two_accounts
    admin, mine, theirs = await _setup(daemon)
    routes = _guarded_routes(daemon)
    assert len(routes) > 25, routes
    nobody = {key: NO_SUCH_ID for key in theirs}
    for username in ("guard1", "super1"):
        async with aiohttp.ClientSession(headers=await _bearer(daemon, username)) as http:
            for method, pattern in routes:
                status, body = await _answer(http, daemon, method, _fill(pattern, theirs))
                assert status == 404, (username, method, pattern, status, body[:200])
                # Exactly as for something that does not exist: nothing tells the two apart.
                assert (status, body) == await _answer(http, daemon, method, _fill(pattern, nobody)), pattern
    # Nothing of theirs was changed by all those requests.
    status, event = await daemon.api("GET", f"/api/events/{theirs['event_id']}", admin)
    assert status == 200 and event["status"] == "active"
    status, alarm = await daemon.api("GET", f"/api/alarms/{theirs['alarm_id']}", admin)
    assert status == 200 and alarm["notes"] == [] and alarm["state"] == "acknowledged"
    status, _ = await daemon.api("GET", f"/api/cameras/{theirs['camera_id']}", admin)
    assert status == 200
    # Their own items they do get.
    async with aiohttp.ClientSession(headers=await _bearer(daemon, "super1")) as http:
        for path in ("/api/events/{event_id}", "/api/alarms/{alarm_id}", "/media/{media_id}",
                     "/media/{media_id}/thumbnail", "/api/cameras/{camera_id}", "/api/accounts/{account_id}",
                     "/events/{event_id}", "/alarms/{alarm_id}", "/cameras/{camera_id}", "/accounts/{account_id}"):
            status, _ = await _answer(http, daemon, "GET", _fill(path, mine))
            assert status == 200, path


LIST_VARIANTS = {"/api/events": ("", "?status=all", "?status=alarmed"), "/api/alarms": ("", "?state=all"),
                 "/alarms": ("", "?state=all")}


async def test_lists_leave_out_other_accounts(two_accounts: Daemon) -> None:
    """Every page and API answer without an id in its path (the wall, the lists) is free of the other account."""
    daemon = two_accounts
    admin, mine, theirs = await _setup(daemon)
    app = create_app(daemon.config, daemon.services)
    paths = sorted({r.resource.canonical for r in app.router.routes()
                    if r.method == "GET" and r.resource is not None and "{" not in r.resource.canonical
                    and not r.resource.canonical.startswith(("/static", "/ws", "/login", "/setup"))})
    assert {"/", "/api/events", "/api/alarms", "/alarms", "/api/accounts", "/accounts", "/api/cameras",
            "/cameras", "/api/live", "/dismissed"} <= set(paths)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin}"}) as http:
        async with http.get(daemon.url + "/api/alarms?state=all") as response:
            assert {a["id"] for a in (await response.json())["alarms"]} >= {mine["alarm_id"], theirs["alarm_id"]}
        async with http.get(daemon.url + "/") as response:
            assert "Other Gate" in await response.text()  # the admin, unlimited, sees both accounts
        # One of theirs dismissed, so that the dismissed-events page has something of theirs to leak.
        status, body = await daemon.api("POST", "/api/events/dismiss", admin, json={"ids": [theirs["event_id"]]})
        assert status == 200 and body["dismissed"] == [theirs["event_id"]], body
        async with http.get(daemon.url + "/dismissed") as response:
            assert "Other Gate" in await response.text()
    async with aiohttp.ClientSession(headers=await _bearer(daemon, "super1")) as http:
        seen = 0
        for path in paths:
            for variant in LIST_VARIANTS.get(path, ("",)):
                async with http.get(daemon.url + path + variant) as response:
                    text = await response.text()
                    if response.status != 200:
                        assert response.status == 403, (path, response.status)  # admin only (users, settings)
                        continue
                seen += 1
                leaked = [marker for marker in OTHER_MARKERS if marker in text]
                assert not leaked, (path + variant, leaked)
        assert seen >= 12
        async with http.get(daemon.url + "/api/events?status=all") as response:
            ids = {e["id"] for e in (await response.json())["events"]}
            assert ids == {mine["event_id"], mine["alarm_event_id"]}
        async with http.get(daemon.url + "/api/alarms?state=all") as response:
            assert [a["id"] for a in (await response.json())["alarms"]] == [mine["alarm_id"]]
        async with http.get(daemon.url + "/") as response:
            found = re.search(r'<script id="initial-events" type="application/json">(.*?)</script>',
                              await response.text())
            assert found and [e["id"] for e in json.loads(found[1])] == [mine["event_id"]]  # the wall's events


async def test_bulk_dismiss_skips_another_accounts_events_as_unknown(two_accounts: Daemon) -> None:
    daemon = two_accounts
    admin, mine, theirs = await _setup(daemon)
    status, body = await daemon.api("POST", "/api/events/dismiss", await daemon.token("guard1"),
                                    json={"ids": [theirs["event_id"], mine["event_id"], NO_SUCH_ID]})
    assert status == 200, body
    assert body["dismissed"] == [mine["event_id"]]
    assert sorted(body["skipped"], key=lambda s: s["id"]) == [
        {"id": theirs["event_id"], "reason": "unknown"}, {"id": NO_SUCH_ID, "reason": "unknown"}]
    status, event = await daemon.api("GET", f"/api/events/{theirs['event_id']}", admin)
    assert status == 200 and event["status"] == "active"


async def test_the_live_stream_carries_only_the_users_accounts(two_accounts: Daemon) -> None:
    daemon = two_accounts
    admin, mine, theirs = await _setup(daemon)
    start = daemon.services.bus.last_seq
    async with aiohttp.ClientSession(headers=await _bearer(daemon, "guard1")) as http, \
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin}"}) as admin_http:
        async with http.ws_connect(f"{daemon.url}/ws") as ws:
            # The other account's alarm first, then ours: what the guard receives first must be ours.
            for camera, n in (("camera-other", 300), ("camera-front", 301)):
                assert (await daemon.send(distinct(sample("swann-nvr-human.eml"), n),
                                          to=f"{camera}@monitor.local"))["data"][0] == 250
            received = await _until(ws, lambda m: m["type"] == "event.created")
            assert received[-1]["data"]["camera"]["name"] == "Front Door"
            status, _ = await daemon.api("POST", f"/api/alarms/{theirs['alarm_id']}/notes", admin,
                                         json={"text": "seen on the other side"})
            assert status == 201
            status, _ = await daemon.api("POST", f"/api/alarms/{mine['alarm_id']}/notes", admin,
                                         json={"text": "ours"})
            assert status == 201
            received += await _until(ws, lambda m: m["type"] == "alarm.updated")
            assert received[-1]["data"]["id"] == mine["alarm_id"], received[-1]
            # Whatever else came meanwhile (a clip made for an earlier event) was ours too.
            assert {m["data"]["account"]["id"] for m in received} == {mine["account_id"]}, received
            # Who looks at an alarm of the other account: not told to them, nor they to its watchers.
            async with admin_http.ws_connect(f"{daemon.url}/ws") as theirs_watch, \
                    admin_http.ws_connect(f"{daemon.url}/ws") as mine_watch:
                await theirs_watch.send_json({"type": "watch", "alarm_id": theirs["alarm_id"]})
                await mine_watch.send_json({"type": "watch", "alarm_id": mine["alarm_id"]})
                await ws.send_json({"type": "watch", "alarm_id": theirs["alarm_id"]})
                await ws.send_json({"type": "watch", "alarm_id": mine["alarm_id"]})
                viewers: list[list[str]] = []
                while ["guard1", "root"] not in viewers:
                    message = await mine_watch.receive_json(timeout=10)
                    if message["type"] == "alarm.viewers":
                        viewers.append(message["data"]["users"])
                told = []
                while not theirs_watch.closed and (item := await _pending(theirs_watch)) is not None:
                    told.append(item)
                assert all("guard1" not in m["data"].get("users", []) for m in told), told
        # Replayed after a reconnect: the same filter.
        async with http.ws_connect(f"{daemon.url}/ws?since={start}") as ws:
            replayed = []
            while (item := await _pending(ws, 1.0)) is not None:
                replayed.append(item)
    accounts = {m["data"]["account"]["id"] for m in replayed if "account" in m["data"]}
    assert replayed and accounts == {mine["account_id"]}, replayed


async def _until(ws: aiohttp.ClientWebSocketResponse, last: Callable[[dict[str, Any]], bool]
                 ) -> list[dict[str, Any]]:
    """The messages received up to and including the first that *last* is true of (each within 10 s)."""
    received = []
    while not received or not last(received[-1]):
        received.append(await ws.receive_json(timeout=10))
    return received


async def _pending(ws: aiohttp.ClientWebSocketResponse, timeout: float = 0.3) -> dict[str, Any] | None:
    """The next message already sent or arriving within *timeout*, or None."""
    try:
        return await ws.receive_json(timeout=timeout)
    except TimeoutError:
        return None


async def test_users_api_and_page_set_the_accounts(two_accounts: Daemon) -> None:
    daemon = two_accounts
    admin, mine, theirs = await _setup(daemon)
    _, users = await daemon.api("GET", "/api/users", admin)
    by_name = {u["username"]: u for u in users["users"]}
    assert by_name["root"]["accounts"] == [] and by_name["guard1"]["accounts"] == [mine["account_id"]]
    guard_id = by_name["guard1"]["id"]
    guard = await daemon.token("guard1")
    # A change closes the user's live connections (they keep the accounts they opened with); the page reconnects.
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {guard}"}) as http, \
            http.ws_connect(f"{daemon.url}/ws") as ws:
        status, _ = await daemon.api("PATCH", f"/api/users/{guard_id}", admin, json={"accounts": [mine["account_id"]]})
        assert status == 200
        closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4401
    status, body = await daemon.api("PATCH", f"/api/users/{guard_id}", admin, json={"accounts": [NO_SUCH_ID]})
    assert status == 400 and "accounts" in body["fields"]
    status, body = await daemon.api("PATCH", f"/api/users/{guard_id}", admin, json={"accounts": "1"})
    assert status == 400 and "accounts" in body["fields"]
    assert (await daemon.api("GET", f"/api/events/{theirs['event_id']}", guard))[0] == 404
    # Widened to both accounts: the very next request sees the other one (no new sign-in).
    status, user = await daemon.api("PATCH", f"/api/users/{guard_id}", admin,
                                    json={"accounts": [mine["account_id"], theirs["account_id"]]})
    assert status == 200 and user["accounts"] == sorted([mine["account_id"], theirs["account_id"]])
    assert (await daemon.api("GET", f"/api/events/{theirs['event_id']}", guard))[0] == 200
    # An account a user is limited to cannot be deleted from under them (they would then see every account).
    status, body = await daemon.api("POST", "/api/accounts", admin, json={"name": "Empty Shop"})
    empty = body["id"]
    status, _ = await daemon.api("PATCH", f"/api/users/{guard_id}", admin, json={"accounts": [empty]})
    assert status == 200
    status, body = await daemon.api("DELETE", f"/api/accounts/{empty}", admin)
    assert status == 400 and "guard1" in body["fields"]["users"]
    assert (await daemon.api("GET", f"/api/events/{mine['event_id']}", guard))[0] == 404
    # None: every account again.
    status, user = await daemon.api("PATCH", f"/api/users/{guard_id}", admin, json={"accounts": []})
    assert status == 200 and user["accounts"] == []
    assert (await daemon.api("GET", f"/api/events/{theirs['event_id']}", guard))[0] == 200
    # The users page: each account a box; ticking one limits the user, ticking none lifts it.
    from test_web import browser_session, csrf_of, log_in

    async with browser_session() as http:
        await log_in(daemon, http, "root")
        token = await csrf_of(http, f"{daemon.url}/users/{guard_id}")
        async with http.get(f"{daemon.url}/users/{guard_id}") as response:
            page = await response.text()
            assert f'name="accounts" value="{theirs["account_id"]}"' in page
        form = aiohttp.FormData([("csrf_token", token), ("role", "guard"), ("active", "on"),
                                 ("accounts_shown", "1"), ("accounts", str(theirs["account_id"]))])
        async with http.post(f"{daemon.url}/users/{guard_id}", data=form, headers={"Origin": daemon.url}) as response:
            assert response.status == 200 and response.url.path == "/users"
            assert "Other Customer" in await response.text()  # the users list names the account
        _, user = await daemon.api("GET", f"/api/users/{guard_id}", admin)
        assert user["accounts"] == [theirs["account_id"]]
        form = aiohttp.FormData([("csrf_token", token), ("role", "guard"), ("active", "on"), ("accounts_shown", "1")])
        async with http.post(f"{daemon.url}/users/{guard_id}", data=form, headers={"Origin": daemon.url}) as response:
            assert response.status == 200
        _, user = await daemon.api("GET", f"/api/users/{guard_id}", admin)
        assert user["accounts"] == []


async def test_a_limited_supervisor_works_only_within_their_accounts(two_accounts: Daemon) -> None:
    daemon = two_accounts
    admin, mine, theirs = await _setup(daemon)
    supervisor = await daemon.token("super1")
    # An account they create they would not see: that is for unlimited users.
    status, body = await daemon.api("POST", "/api/accounts", supervisor, json={"name": "New Shop"})
    assert status == 403 and "limited to accounts" in body["error"]
    status, _ = await daemon.api("GET", "/accounts/new", supervisor)
    assert status == 403
    status, body = await daemon.api("POST", "/api/cameras", supervisor,
                                    json={"name": "Sneaky", "account_id": theirs["account_id"]})
    assert status == 400 and body["fields"]["account_id"] == "no such account"
    status, camera = await daemon.api("POST", "/api/cameras", supervisor,
                                      json={"name": "Porch", "account_id": mine["account_id"]})
    assert status == 201
    status, body = await daemon.api("PATCH", f"/api/cameras/{camera['id']}", supervisor,
                                    json={"account_id": theirs["account_id"]})
    assert status == 400 and body["fields"]["account_id"] == "no such account"


def test_user_add_with_accounts(tmp_path: Path) -> None:
    config = write_config(tmp_path, accounts=[*BASE_CONFIG["accounts"], OTHER_ACCOUNT])
    # A fresh install: the daemon has not run, the configuration's accounts get their ids (1, 2) now.
    created = run_cli("user", "add", "nightguard", "--role", "guard", "--accounts", "2", "--password-stdin",
                      "--config", str(config), stdin=f"{PASSWORD}\n")
    assert created.returncode == 0, created.stderr
    assert "limited to account(s) 2" in created.stdout
    unknown = run_cli("user", "add", "ghost", "--role", "guard", "--accounts", "1,9", "--password-stdin",
                      "--config", str(config), stdin=f"{PASSWORD}\n")
    assert unknown.returncode != 0 and "no such account: 9" in unknown.stderr
    assert "1 Test Customer, 2 Other Customer" in unknown.stderr
    bad = run_cli("user", "add", "ghost", "--role", "guard", "--accounts", "one", "--password-stdin",
                  "--config", str(config), stdin=f"{PASSWORD}\n")
    assert bad.returncode != 0 and "account ids separated by commas" in bad.stderr
    everyone = run_cli("user", "add", "boss", "--role", "admin", "--password-stdin", "--config", str(config),
                       stdin=f"{PASSWORD}\n")
    assert everyone.returncode == 0, everyone.stderr
    db = open_sqlite(tmp_path / "data" / "vmond.db")
    try:
        users = {u["username"]: u for u in list_users()}
        assert set(users) == {"nightguard", "boss"}  # the refused one was not half created
        assert users["nightguard"]["accounts"] == [2] and users["boss"]["accounts"] == []
        user = credentials("nightguard")
        assert user is not None and user["accounts"] == [2]
    finally:
        db.close()


def test_migration_10_on_an_existing_database(tmp_path: Path) -> None:
    """A database of the schema before (version 7, with users and an account) gains the link table; its users
    see every account, as before; an account cannot then be deleted from under a user limited to it."""
    path = tmp_path / "vmond.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for step in migrations.MIGRATIONS[:7]:
        step(conn)
    conn.execute("PRAGMA user_version = 7")
    conn.execute("INSERT INTO user (username, password_hash, role, active, created_at) "
                 "VALUES ('old', 'x', 'guard', 1, '2026-01-01T00:00:00.000000Z')")
    conn.execute("INSERT INTO account (name, address, notes, armed, from_config, created_at, updated_at) "
                 "VALUES ('Old Shop', '', '', 1, 0, '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')")
    conn.close()
    db = open_sqlite(path)
    try:
        assert migrations.schema_version(db.connection()) == migrations.LATEST
        assert (tmp_path / "vmond.db.v7.bak").is_file()
        (user,) = list_users()
        assert user["username"] == "old" and user["accounts"] == []
        with db.atomic():
            assert set_user_accounts(user["id"], [1]) == [1]
        with pytest.raises(Invalid, match="users"), db.atomic():
            delete_account(1, None)
        with pytest.raises(pw.IntegrityError), db.atomic():
            db.execute_sql("DELETE FROM account WHERE id = 1")  # the database itself refuses, too
    finally:
        db.close()


async def test_a_resync_from_another_central_node_reaches_a_limited_user(two_accounts: Daemon) -> None:
    """What the live bridge publishes when messages between nodes may have been missed names no account: a
    user limited to accounts must get it too, or their wall would silently stay behind."""
    daemon = two_accounts
    await _setup(daemon)
    async with aiohttp.ClientSession(headers=await _bearer(daemon, "guard1")) as http, \
            http.ws_connect(f"{daemon.url}/ws") as ws:
        await ws.send_str("ping")
        assert await ws.receive_json(timeout=5) == {"type": "pong"}  # subscribed
        daemon.services.changes.publish_remote("resync", {})
        assert (await ws.receive_json(timeout=5))["type"] == "resync"
