"""What a client may put in a path, a query or a body is answered with 4xx, never 500: ids beyond the database's
integers, text the database cannot hold, numbers JSON allows but SQLite does not."""

from __future__ import annotations

import re

import aiohttp
import pytest
from conftest import Daemon
from test_web import browser_session, csrf_of, log_in

from vmond.web.app import create_app

TOO_BIG = str(2**63)  # one more than SQLite's largest integer


async def test_no_route_answers_500_to_an_id_too_large(daemon: Daemon) -> None:
    await daemon.add_user("root", "admin")
    token = await daemon.token("root")
    app = create_app(daemon.config, daemon.services)
    checked = 0
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for route in app.router.routes():
            info = route.resource.get_info() if route.resource is not None else {}
            formatter = info.get("formatter", "")
            if "_id}" not in formatter or route.method == "HEAD":
                continue
            path = re.sub(r"\{\w+_id\}", TOO_BIG, formatter)
            kwargs = {"json": {}} if route.method in ("POST", "PATCH") else {}
            async with http.request(route.method, f"{daemon.url}{path}", **kwargs) as response:
                assert response.status in (400, 403, 404, 409), (route.method, path, response.status)
            checked += 1
    assert checked > 30


@pytest.mark.parametrize("query", [f"account={TOO_BIG}", f"camera={TOO_BIG}", "account=-1", "camera=x"])
async def test_history_filters_out_of_range_are_bad_requests(daemon: Daemon, query: str) -> None:
    await daemon.add_user("boss", "supervisor")
    status, body = await daemon.api("GET", f"/api/alarms?state=all&{query}", await daemon.token("boss"))
    assert status == 400, body


@pytest.mark.parametrize(("path", "body"), [
    ("/api/accounts", '{"name": "Shop \\ud800"}'),
    ("/api/accounts", '{"name": "Shop", "notes": "\\udfff"}'),
    ("/api/users", '{"username": "eve", "password": "\\ud800\\ud800\\ud800\\ud800\\ud800\\ud800\\ud800\\ud800", '
                   '"role": "guard"}'),
    ("/api/cameras", '{"account_id": ' + TOO_BIG + ', "name": "Gate"}'),
    ("/api/cameras", '{"account_id": 1e400, "name": "Gate"}'),
    ("/api/cameras", '{"account_id": NaN, "name": "Gate"}'),
])
async def test_json_the_database_cannot_hold_is_a_bad_request(daemon: Daemon, path: str, body: str) -> None:
    await daemon.add_user("root", "admin")
    headers = {"Authorization": f"Bearer {await daemon.token('root')}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http, http.post(f"{daemon.url}{path}", data=body.encode(),
                                                          headers=headers) as response:
        assert response.status == 400, await response.text()


async def test_a_camera_needs_an_account(daemon: Daemon) -> None:
    await daemon.add_user("root", "admin")
    token = await daemon.token("root")
    for body in ({"name": "Gate"}, {"name": "Gate", "account_id": None}):
        status, answer = await daemon.api("POST", "/api/cameras", token, json=body)
        assert status == 400 and answer["fields"]["account_id"] == "required", answer


async def test_a_token_that_is_not_ascii_is_just_wrong(daemon: Daemon) -> None:
    await daemon.add_user("guard1", "guard")
    async with browser_session() as http:
        await csrf_of(http, f"{daemon.url}/login")
        async with http.post(f"{daemon.url}/login", data="username=a&password=b&csrf_token=%C3%A9",
                             headers={"Content-Type": "application/x-www-form-urlencoded"}) as response:
            assert response.status == 403
        await log_in(daemon, http, "guard1")
        async with http.post(f"{daemon.url}/logout", headers={"X-CSRF-Token": "é", "Origin": daemon.url},
                             allow_redirects=False) as response:
            assert response.status == 403


@pytest.mark.parametrize("query", ["to=9999-12-31", "from=0001-01-01T00:00:00%2B14:00", "from=yesterday"])
async def test_dates_out_of_range_are_bad_requests(daemon: Daemon, query: str) -> None:
    await daemon.add_user("boss", "supervisor")
    status, body = await daemon.api("GET", f"/api/alarms?state=all&{query}", await daemon.token("boss"))
    assert status == 400, body


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/x-www-form-urlencoded", b"text=\xff\xfe"),
    ("multipart/form-data", b"--x\r\ntext\r\n"),
    ("multipart/form-data; boundary=zzz", b"no boundary here"),
])
async def test_a_form_that_cannot_be_read_is_a_bad_request(daemon: Daemon, content_type: str, body: bytes) -> None:
    await daemon.add_user("guard1", "guard")
    token = await daemon.token("guard1")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for path in ("/alarms/1/notes", "/events/1/alarm", "/accounts/new"):
            async with http.post(f"{daemon.url}{path}", data=body, headers={"Content-Type": content_type},
                                 allow_redirects=False) as response:
                assert response.status in (400, 403, 404), (path, response.status)  # never 500
    async with browser_session() as http:  # a browser session: the CSRF check reads the form first
        await log_in(daemon, http, "guard1")
        async with http.post(f"{daemon.url}/alarms/1/notes", data=body, allow_redirects=False,
                             headers={"Content-Type": content_type, "Origin": daemon.url}) as response:
            assert response.status == 400
