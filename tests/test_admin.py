"""Administration over the API and the router's access rules: accounts, cameras, users, roles."""

from __future__ import annotations

import asyncio
import re
import smtplib
from collections.abc import Callable

import aiohttp
import pytest
from conftest import PASSWORD, Daemon, distinct, sample, send_data

from vmond.config import Config
from vmond.daemon import running
from vmond.web.app import create_app


@pytest.fixture
async def boss(daemon: Daemon) -> str:
    await daemon.add_user("boss", "supervisor")
    return await daemon.token("boss")


async def test_accounts_with_contacts(daemon: Daemon, boss: str) -> None:
    status, body = await daemon.api("POST", "/api/accounts", boss, json={"address": "nowhere"})
    assert status == 400 and body["fields"] == {"name": "required"}
    status, account = await daemon.api("POST", "/api/accounts", boss, json={
        "name": "Corner Shop", "address": "2 High Street", "notes": "Alarm panel behind the counter",
        "contacts": [{"name": "Owner", "phone": "+15550111", "priority": 2},
                     {"name": "Manager", "phone": "+15550112", "role": "keyholder", "priority": 1}]})
    assert status == 201 and account["name"] == "Corner Shop" and not account["from_config"]
    assert [c["name"] for c in account["contacts"]] == ["Manager", "Owner"]  # call order
    status, body = await daemon.api("POST", "/api/accounts", boss, json={"name": "corner shop"})
    assert status == 400 and "name" in body["fields"]
    status, body = await daemon.api("PATCH", f"/api/accounts/{account['id']}", boss, json={"contacts": [
        {"name": "", "phone": "+15550113"}, {"name": "X", "phone": "+15550114", "priority": 0}]})
    assert status == 400 and set(body["fields"]) == {"contacts[0].name", "contacts[1].priority"}
    status, changed = await daemon.api("PATCH", f"/api/accounts/{account['id']}", boss,
                                       json={"notes": "Code 1234 at the back door", "contacts": []})
    assert status == 200 and changed["notes"] == "Code 1234 at the back door" and changed["contacts"] == []
    assert changed["address"] == "2 High Street"  # what was not sent stays
    status, listed = await daemon.api("GET", "/api/accounts", boss)
    assert sorted(a["name"] for a in listed["accounts"]) == ["Corner Shop", "Test Customer"]
    status, _ = await daemon.api("DELETE", f"/api/accounts/{account['id']}", boss)
    assert status == 204
    status, _ = await daemon.api("GET", f"/api/accounts/{account['id']}", boss)
    assert status == 404


async def test_accounts_from_the_configuration_are_read_only(daemon: Daemon, boss: str) -> None:
    status, listed = await daemon.api("GET", "/api/accounts", boss)
    (declared,) = listed["accounts"]
    assert declared["from_config"] and [c["name"] for c in declared["cameras"]] == ["Back Yard", "Front Door"]
    status, body = await daemon.api("PATCH", f"/api/accounts/{declared['id']}", boss, json={"notes": "x"})
    assert status == 409 and "configuration file" in body["error"]
    status, _ = await daemon.api("DELETE", f"/api/accounts/{declared['id']}", boss)
    assert status == 409
    camera_id = declared["cameras"][0]["id"]
    status, _ = await daemon.api("PATCH", f"/api/cameras/{camera_id}", boss, json={"name": "x"})
    assert status == 409


async def test_a_new_camera_gets_an_address_that_receives_mail(daemon: Daemon, boss: str) -> None:
    _, account = await daemon.api("POST", "/api/accounts", boss, json={"name": "Warehouse"})
    status, body = await daemon.api("POST", "/api/cameras", boss, json={"name": "Gate"})
    assert status == 400 and "account_id" in body["fields"]
    status, camera = await daemon.api("POST", "/api/cameras", boss, json={
        "account_id": account["id"], "name": "Gate", "rtsp_url": "rtsp://admin:hunter22@10.0.0.9/stream"})
    assert status == 201
    assert re.fullmatch(r"camera-[a-hj-km-np-z2-9]{5}@monitor\.local", camera["smtp_address"])
    assert camera["has_rtsp_url"] and "hunter22" not in str(camera)
    replies = await daemon.send(sample("swann-nvr-human.eml"), to=camera["smtp_address"])
    assert replies["data"][0] == 250
    await daemon.wait_idle()
    status, events = await daemon.api("GET", "/api/events", boss)
    assert [(e["camera"]["name"], e["account"]["name"]) for e in events["events"]] == [("Gate", "Warehouse")]
    # A camera with events is retired, not deleted: it refuses mail and keeps its history.
    status, body = await daemon.api("DELETE", f"/api/cameras/{camera['id']}", boss)
    assert status == 200 and body["outcome"] == "retired"
    assert (await daemon.send(sample("swann-nvr-human.eml"), to=camera["smtp_address"]))["rcpt"][0] == 550
    status, events = await daemon.api("GET", "/api/events?status=all", boss)
    assert len(events["events"]) == 1
    _, spare = await daemon.api("POST", "/api/cameras", boss, json={"account_id": account["id"], "name": "Spare"})
    status, body = await daemon.api("DELETE", f"/api/cameras/{spare['id']}", boss)
    assert status == 200 and body["outcome"] == "deleted"
    status, _ = await daemon.api("GET", f"/api/cameras/{spare['id']}", boss)
    assert status == 404


async def test_per_camera_password_set_in_the_dashboard(make_config: Callable[..., Config]) -> None:
    config = make_config(smtp={"listen": "127.0.0.1:0", "domain": "monitor.local", "auth": "per-camera"},
                         accounts=[{"name": "Shop", "cameras": [{"name": "Till", "smtp_address": "camera-till",
                                                                 "smtp_password": "till-secret"}]}])
    async with running(config) as services:
        daemon = Daemon(services)
        await daemon.add_user("boss", "supervisor")
        boss = await daemon.token("boss")
        _, account = await daemon.api("POST", "/api/accounts", boss, json={"name": "Depot"})
        status, camera = await daemon.api("POST", "/api/cameras", boss, json={
            "account_id": account["id"], "name": "Dock", "generate_password": True})
        assert status == 201 and len(camera["smtp_password"]) >= 16
        status, again = await daemon.api("GET", f"/api/cameras/{camera['id']}", boss)
        assert "smtp_password" not in again  # shown once, stored only as a hash

        def deliver(password: str) -> int:
            with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=10) as client:
                client.ehlo("camera")
                try:
                    client.login(camera["smtp_address"], password)
                except smtplib.SMTPAuthenticationError as exc:
                    return exc.smtp_code
                client.mail("cam@cam.lan")
                client.rcpt(camera["smtp_address"])
                return send_data(client, sample("swann-nvr-human.eml"))[0]

        assert await asyncio.to_thread(deliver, "wrong password") == 535
        assert await asyncio.to_thread(deliver, camera["smtp_password"]) == 250
        status, changed = await daemon.api("PATCH", f"/api/cameras/{camera['id']}", boss,
                                           json={"smtp_password": "installer-chosen"})
        assert status == 200
        assert await asyncio.to_thread(deliver, camera["smtp_password"]) == 535
        assert await asyncio.to_thread(deliver, "installer-chosen") == 250


@pytest.fixture
async def admin_token(daemon: Daemon) -> str:
    await daemon.add_user("root", "admin")
    return await daemon.token("root")


async def test_users_are_for_admins(daemon: Daemon, boss: str, admin_token: str) -> None:
    status, _ = await daemon.api("GET", "/api/users", boss)
    assert status == 403
    status, _ = await daemon.api("POST", "/api/users", boss, json={"username": "x", "password": PASSWORD,
                                                                   "role": "admin"})
    assert status == 403
    status, body = await daemon.api("POST", "/api/users", admin_token, json={"username": "g 1", "password": "short",
                                                                             "role": "king"})
    assert status == 400 and set(body["fields"]) == {"username", "password", "role"}
    status, guard = await daemon.api("POST", "/api/users", admin_token,
                                     json={"username": "guard9", "password": PASSWORD, "role": "guard"})
    assert status == 201 and "password_hash" not in guard
    status, _ = await daemon.api("POST", "/api/users", admin_token,
                                 json={"username": "guard9", "password": PASSWORD, "role": "guard"})
    assert status == 409
    token = await daemon.token("guard9")
    status, _ = await daemon.api("GET", "/api/accounts", token)
    assert status == 403  # a guard calling a supervisor endpoint
    status, changed = await daemon.api("PATCH", f"/api/users/{guard['id']}", admin_token,
                                       json={"password": "a brand new password"})
    assert status == 200
    status, _ = await daemon.api("GET", "/api/events", token)
    assert status == 401  # the old password's sessions ended
    status, _ = await daemon.api("PATCH", f"/api/users/{guard['id']}", admin_token, json={"active": False})
    status, _ = await daemon.api("POST", "/api/token", None, json={"username": "guard9",
                                                                   "password": "a brand new password"})
    assert status == 401
    status, users = await daemon.api("GET", "/api/users", admin_token)
    assert all("password_hash" not in u for u in users["users"])
    me = next(u for u in users["users"] if u["username"] == "root")
    status, body = await daemon.api("DELETE", f"/api/users/{me['id']}", admin_token)
    assert status == 409
    status, body = await daemon.api("PATCH", f"/api/users/{me['id']}", admin_token, json={"role": "guard"})
    assert status == 409 and "last active administrator" in body["error"]
    status, _ = await daemon.api("DELETE", f"/api/users/{guard['id']}", admin_token)
    assert status == 204


PAGES_ALLOWED_WITHOUT_SESSION = {"/", "/login", "/setup", "/api/health", "/api/token"}


async def test_every_route_refuses_strangers(daemon: Daemon) -> None:
    """Enumerates the router, so a new route is covered the day it is added."""
    app = create_app(daemon.config, daemon.services)
    await daemon.add_user()  # setup is gone once a user exists
    checked = 0
    async with aiohttp.ClientSession() as http:
        for route in app.router.routes():
            resource = route.resource
            if resource is None or resource.canonical.startswith("/static") or route.method == "HEAD":
                continue
            path = re.sub(r"\{[^}]+\}", "1", resource.canonical)
            if path in PAGES_ALLOWED_WITHOUT_SESSION:
                continue
            async with http.request(route.method, daemon.url + path, allow_redirects=False) as response:
                if path.startswith(("/api/", "/ws", "/media/", "/metrics")):
                    assert response.status == 401, (route.method, path, response.status)
                else:
                    assert response.status == 303, (route.method, path, response.status)
                    assert response.headers["Location"].startswith("/login"), (route.method, path)
            checked += 1
    assert checked > 40


async def test_admin_pages_render_and_validate(daemon: Daemon) -> None:
    from test_web import browser_session, csrf_of, log_in

    await daemon.add_user("root", "admin")
    async with browser_session() as http:
        await log_in(daemon, http, "root")
        for path in ("/accounts", "/accounts/new", "/accounts/1", "/cameras", "/cameras/1", "/users", "/users/1",
                     "/accounts/1/delete", "/alarms"):
            async with http.get(daemon.url + path) as response:
                assert response.status == 200, path
        token = await csrf_of(http, daemon.url + "/accounts/new")
        form = {"csrf_token": token, "name": "", "contacts-0-name": "Ann", "contacts-0-phone": "+1555"}
        async with http.post(daemon.url + "/accounts/new", data=form, headers={"Origin": daemon.url}) as response:
            page = await response.text()
            assert response.status == 400 and 'class="error" role="alert">required<' in page
            assert 'value="Ann"' in page  # what was typed survives the error
        form["name"] = "Bakery"
        async with http.post(daemon.url + "/accounts/new", data=form, headers={"Origin": daemon.url}) as response:
            page = await response.text()
            assert response.status == 200 and "Bakery" in page and 'value="+1555"' in page
            account_id = response.url.path.rsplit("/", 1)[1]
        async with http.post(daemon.url + "/cameras", headers={"Origin": daemon.url},
                             data={"csrf_token": token, "name": "Oven", "account_id": account_id}) as response:
            page = await response.text()
            assert response.status == 200 and re.search(r"camera-[a-z2-9]{5}@monitor\.local", page)
        async with http.post(daemon.url + "/users", headers={"Origin": daemon.url},
                             data={"csrf_token": token, "username": "ann", "password": "x", "role": "guard"}) as r:
            assert r.status == 400 and "at least 8 characters" in await r.text()


async def test_settings_show_the_configuration_with_secrets_masked(make_config: Callable[..., Config]) -> None:
    from test_web import browser_session, log_in

    config = make_config(mqtt={"password": "broker-secret-123", "username": "vmond"},
                         web={"listen": "127.0.0.1:0", "tls": {"self_signed": True}})
    async with running(config) as services:
        daemon = Daemon(services)
        daemon.url = daemon.url.replace("http://", "https://")
        await daemon.add_user("root", "admin")
        await daemon.add_user("boss", "supervisor")
        async with browser_session(verify_tls=False) as http:
            async with http.get(daemon.url + "/login") as response:
                assert response.status == 200
            await log_in(daemon, http, "root")
            cookie = next(c for c in http.cookie_jar if c.key == "vmond_session")
            assert cookie["secure"] and cookie["httponly"]
            async with http.get(daemon.url + "/settings") as response:
                page = await response.text()
            assert response.status == 200 and "broker-secret-123" not in page and "********" in page
            assert re.search(r"SHA-256 <code>([0-9A-F]{2}:){31}[0-9A-F]{2}</code>", page)
        async with browser_session(verify_tls=False) as http:
            await log_in(daemon, http, "boss")
            async with http.get(daemon.url + "/settings") as response:
                assert response.status == 403


async def test_the_installer_chooses_a_cameras_address(daemon: Daemon, boss: str) -> None:
    _, account = await daemon.api("POST", "/api/accounts", boss, json={"name": "Garage"})
    new = {"account_id": account["id"], "name": "Gate"}
    status, gate = await daemon.api("POST", "/api/cameras", boss, json={**new, "smtp_address": "Gate.North"})
    assert status == 201 and gate["smtp_address"] == "gate.north@monitor.local"
    status, yard = await daemon.api("POST", "/api/cameras", boss, json={**new, "smtp_address": "Yard@Monitor.Local"})
    assert status == 201 and yard["smtp_address"] == "yard@monitor.local"  # our domain: reduced to the local part
    status, spare = await daemon.api("POST", "/api/cameras", boss, json={**new, "smtp_address": ""})
    assert status == 201 and re.fullmatch(r"camera-[a-z2-9]{5}@monitor\.local", spare["smtp_address"])
    refused = {"-gate": "not a valid camera address", "gate north": "not a valid camera address",
               "x" * 65: "not a valid camera address", "gate@example.com": "is not smtp.domain 'monitor.local'",
               "GATE.NORTH": "is the address of the camera 'Gate'",
               "camera-front@monitor.local": "is the address of the camera 'Front Door'"}
    for address, message in refused.items():
        status, body = await daemon.api("POST", "/api/cameras", boss, json={**new, "smtp_address": address})
        assert status == 400 and message in body["fields"]["smtp_address"], (address, body)
    status, body = await daemon.api("POST", "/api/cameras", boss, json={**new, "smtp_address": 42})
    assert status == 400 and body["fields"] == {"smtp_address": "must be text"}
    # The SMTP door knows the chosen address at once.
    assert (await daemon.send(sample("swann-nvr-human.eml"), to="gate.north@monitor.local"))["data"][0] == 250
    await daemon.wait_idle()  # filed under the camera (mail still in the spool at a change would be unknown_camera)
    # A dashboard camera may move to another address: the old one is refused from then on.
    status, moved = await daemon.api("PATCH", f"/api/cameras/{gate['id']}", boss, json={"smtp_address": "gate-south"})
    assert status == 200 and moved["smtp_address"] == "gate-south@monitor.local" and moved["name"] == "Gate"
    assert (await daemon.send(sample("swann-nvr-human.eml"), to="gate.north@monitor.local"))["rcpt"][0] == 550
    assert (await daemon.send(distinct(sample("swann-nvr-human.eml"), 2), to="gate-south@monitor.local"))["data"][0] \
        == 250
    status, body = await daemon.api("PATCH", f"/api/cameras/{gate['id']}", boss, json={"smtp_address": " "})
    assert status == 400 and "smtp_address" in body["fields"]
    status, same = await daemon.api("PATCH", f"/api/cameras/{gate['id']}", boss, json={"smtp_address": "Gate-South"})
    assert status == 200 and same["smtp_address"] == "gate-south@monitor.local"
    await daemon.wait_idle()
    status, events = await daemon.api("GET", "/api/events", boss)
    assert [e["camera"]["smtp_address"] for e in events["events"]] == ["gate-south@monitor.local"] * 2
    # A camera the configuration file declares keeps the address the file gives it.
    _, cameras = await daemon.api("GET", "/api/cameras", boss)
    front = next(c for c in cameras["cameras"] if c["name"] == "Front Door")
    status, _ = await daemon.api("PATCH", f"/api/cameras/{front['id']}", boss, json={"smtp_address": "porch"})
    assert status == 409


async def test_whether_a_camera_has_an_smtp_password(make_config: Callable[..., Config]) -> None:
    config = make_config(accounts=[{"name": "Shop", "cameras": [
        {"name": "Till", "smtp_address": "camera-till", "smtp_password": "till-secret"},
        {"name": "Door", "smtp_address": "camera-door"}]}])
    async with running(config) as services:
        daemon = Daemon(services)
        await daemon.add_user("boss", "supervisor")
        boss = await daemon.token("boss")
        _, listed = await daemon.api("GET", "/api/cameras", boss)
        assert {c["name"]: c["has_smtp_password"] for c in listed["cameras"]} == {"Till": True, "Door": False}
        account_id = listed["cameras"][0]["account"]["id"]
        _, depot = await daemon.api("POST", "/api/accounts", boss, json={"name": "Depot"})
        status, dock = await daemon.api("POST", "/api/cameras", boss, json={"account_id": depot["id"], "name": "Dock"})
        assert status == 201 and dock["has_smtp_password"] is False
        status, dock = await daemon.api("PATCH", f"/api/cameras/{dock['id']}", boss,
                                        json={"smtp_password": "dock-secret"})
        assert status == 200 and dock["has_smtp_password"] is True
        for path in (f"/api/cameras/{dock['id']}", "/api/cameras", f"/api/accounts/{account_id}", "/api/accounts"):
            status, body = await daemon.api("GET", path, boss)
            assert status == 200 and "has_smtp_password" in str(body)
            assert "secret" not in str(body) and "scrypt" not in str(body) and "password_hash" not in str(body)
        status, dock = await daemon.api("PATCH", f"/api/cameras/{dock['id']}", boss, json={"clear_password": True})
        assert status == 200 and dock["has_smtp_password"] is False


async def test_contacts_can_be_reached(daemon: Daemon, boss: str) -> None:
    contacts = [{"name": "A", "phone": "call me"}, {"name": "B", "email": "b@example"}, {"name": "C", "role": "owner"},
                {"name": "D", "phone": "  +1  555 0100 ", "email": ""}, {"name": "E", "phone": 5550100},
                {"name": "F", "phone": "(555) 010-0100", "email": "f@example.com"}]
    status, body = await daemon.api("POST", "/api/accounts", boss, json={"name": "Kiosk", "contacts": contacts})
    assert status == 400 and body["error"]
    assert body["fields"] == {
        "contacts[0].phone": ("'call me' is not a phone number: use digits with optional spaces, dashes, dots or "
                              "parentheses and an optional leading +, e.g. +15550100 or (555) 010-0100"),
        "contacts[1].email": "'b@example' is not an e-mail address: write it like jane@example.com",
        "contacts[2].phone": "a contact needs a phone number or an e-mail address",
        "contacts[4].phone": "must be text"}
    contacts[0]["phone"], contacts[1]["email"], contacts[2]["email"], contacts[4]["phone"] = (
        "+15550100", "b@example.com", "c@example.com", "5550100")
    status, account = await daemon.api("POST", "/api/accounts", boss, json={"name": "Kiosk", "contacts": contacts})
    assert status == 201, account
    assert [(c["name"], c["phone"], c["email"]) for c in account["contacts"]] == [
        ("A", "+15550100", None), ("B", None, "b@example.com"), ("C", None, "c@example.com"),
        ("D", "+1 555 0100", None), ("E", "5550100", None), ("F", "(555) 010-0100", "f@example.com")]
    many = [{"name": f"N{n}", "phone": f"555-01{n:02d}"} for n in range(51)]
    status, body = await daemon.api("PATCH", f"/api/accounts/{account['id']}", boss, json={"contacts": many})
    assert status == 400 and body["fields"] == {"contacts": "at most 50 contacts"}
