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
    sites = (await central.get("/api/sites"))["sites"]
    assert [s["id"] for s in sites] == ["test-site"] and sites[0]["online"] is True
    _, edge_events = await edge.api("GET", "/api/events", edge_token)
    status, alarm = await edge.api("POST", f"/api/events/{edge_events['events'][0]['id']}/alarm", edge_token)
    assert status in (200, 201), alarm
    alarms = await poll(lambda: central.list("/api/alarms", "alarms"), "the alarm on the central")
    assert alarms[0]["site"]["id"] == "test-site" and alarms[0]["opened_by"]["username"] == "admin at Test Site"
