"""A central station mirrors its sites (issue 18): what an edge records appears on the central."""

from __future__ import annotations

import pytest
from centralsite import Central, central, edge, poll  # noqa: F401 - fixtures
from conftest import Daemon, sample

pytestmark = pytest.mark.usefixtures("quick_mqtt")
MAIL = "hikvision-ipc-intrusion.eml"


async def test_an_edge_event_and_its_alarm_reach_the_central(edge: Daemon, central: Central) -> None:  # noqa: F811
    edge_token = await edge.token()
    await edge.send(sample(MAIL))
    events = await poll(lambda: central.list("/api/events", "events"), "the event on the central")
    event = events[0]
    assert event["site"] == {"id": "test-site", "name": "Test Site"}
    assert event["kind"] == "intrusion" and event["camera"]["name"] == "Front Door"
    health = (await central.get("/api/health"))["central"]
    assert health["connected"] is True and health["mirrored"] >= 1 and health["dropped"] == 0
    sites = (await central.get("/api/sites"))["sites"]
    assert [s["id"] for s in sites] == ["test-site"] and sites[0]["online"] is True
    _, edge_events = await edge.api("GET", "/api/events", edge_token)
    status, alarm = await edge.api("POST", f"/api/events/{edge_events['events'][0]['id']}/alarm", edge_token)
    assert status in (200, 201), alarm
    alarms = await poll(lambda: central.list("/api/alarms", "alarms"), "the alarm on the central")
    assert alarms[0]["site"]["id"] == "test-site" and alarms[0]["opened_by"]["username"] == "admin at Test Site"


async def test_a_sites_accounts_and_cameras_are_read_only_on_the_central(
        edge: Daemon, central: Central) -> None:  # noqa: F811
    await edge.send(sample(MAIL))
    accounts = await poll(lambda: central.list("/api/accounts", "accounts"), "the site's account on the central")
    account = accounts[0]
    assert account["name"] == "Test Customer" and account["site"]["id"] == "test-site"
    assert [c["name"] for c in account["contacts"]] == ["Jane Keyholder"]  # the call list, from the site's config
    camera = next(c for c in account["cameras"] if c["name"] == "Front Door")
    for method, path, body in (("PATCH", f"/api/accounts/{account['id']}", {"name": "Renamed"}),
                               ("DELETE", f"/api/accounts/{account['id']}", None),
                               ("PATCH", f"/api/cameras/{camera['id']}", {"name": "Renamed"}),
                               ("POST", f"/api/accounts/{account['id']}/disarm", {"reason": "test"}),
                               ("POST", f"/api/cameras/{camera['id']}/snooze", {"until": "1h"})):
        status, answer = await central.call(method, path, body)
        assert status == 409 and "belongs to site Test Site" in answer["error"], (method, path, answer)
    page_status, page = await central.call("GET", f"/cameras/{camera['id']}")
    assert page_status == 200 and "site Test Site (mirrored: read-only here)" in page
    assert 'action="/cameras/' not in page  # no snooze or setup form for a site's camera
