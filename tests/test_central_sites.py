"""A central station supervises its sites (issue 18): an edge process killed (its last will) or gone quiet raises
``site_offline`` on the central's wall, its return closes it, and a restarted central keeps the one event."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from centralsite import (  # noqa: F401
    SECRET,
    SITE_SILENCE,
    Central,
    EdgeProcess,
    central_process,
    edge_process,
    poll,
    watchful_central,
)
from conftest import Daemon, sample
from mosquitto import Mosquitto

pytestmark = pytest.mark.slow

SITE = {"id": "test-site", "name": "Test Site"}


def stop_and_start(central: Central) -> None:
    assert central.process.stop() == 0
    central.restart()


async def site_state(central: Central) -> dict[str, Any]:
    sites = (await central.get("/api/sites"))["sites"]
    assert [s["id"] for s in sites] == ["test-site"], sites
    return dict(sites[0])


async def link_is(central: Central, link: str) -> dict[str, Any] | None:
    site = await site_state(central) if (await central.get("/api/sites"))["sites"] else None
    return site if site is not None and site["link"] == link else None


async def offline_events(central: Central) -> list[dict[str, Any]]:
    return [e for e in await central.list("/api/events?status=all&limit=500", "events") if e["kind"] == "site_offline"]


async def test_a_killed_edge_is_offline_until_it_returns(edge_process: EdgeProcess,  # noqa: F811
                                                         watchful_central: Central) -> None:  # noqa: F811
    central = watchful_central
    await poll(lambda: link_is(central, "online"), "the site online on the central")

    edge_process.kill()
    # Its last will shows within a moment (the watcher is nudged), well before central.site_silence could.
    events = await poll(lambda: central.list("/api/events?site=test-site", "events"), "site_offline raised",
                        timeout=2.5)
    [event] = events
    assert event["kind"] == "site_offline" and event["site"] == SITE and event["status"] == "active"
    assert event["priority"] == 2 and "offline: the broker says so" in event["subject"]
    site = await site_state(central)
    assert site["link"] == "offline" and site["offline_event_id"] == event["id"] and site["online"] is False
    # The filter by site: another site's wall is empty; the queue keeps its order and filters alike.
    assert await central.list("/api/events?site=other-site", "events") == []
    queue = await central.list("/api/events?order=queue&site=test-site", "events")
    assert [e["id"] for e in queue] == [event["id"]]
    detail = await central.get(f"/api/events/{event['id']}")
    assert [a["action"] for a in detail["audit"]] == ["condition.raised"]

    # The central restarted: the condition is remembered, not raised a second time.
    await asyncio.to_thread(stop_and_start, central)
    await poll(lambda: link_is(central, "offline"), "the site offline after the central's restart")
    deadline = asyncio.get_running_loop().time() + 4.0  # longer than central.site_silence
    while asyncio.get_running_loop().time() < deadline:
        assert [e["id"] for e in await offline_events(central)] == [event["id"]]
        await asyncio.sleep(0.25)

    await asyncio.to_thread(edge_process.start)
    closed = await poll(lambda: _closed(central, event["id"]), "site_offline closed by the site's return")
    assert closed["status"] == "dismissed" and "cleared" in closed["flags"]
    assert closed["audit"][-1]["text"] == "vmond closed it: the site is online and sends messages again"
    site = await site_state(central)
    assert site["link"] == "online" and site["offline_event_id"] is None
    assert await central.list("/api/events?site=test-site", "events") == []
    assert len(await offline_events(central)) == 1


async def test_a_silent_edge_is_offline_until_it_speaks(edge_process: EdgeProcess,  # noqa: F811
                                                        watchful_central: Central) -> None:  # noqa: F811
    central = watchful_central
    await poll(lambda: link_is(central, "online"), "the site online on the central")
    # Heartbeats every half second keep a 3 s site_silence from raising anything while the edge runs, and the
    # central's own absence (a restart slower than the silence) is not taken for the site's.
    await asyncio.to_thread(central.process.stop)
    await asyncio.sleep(3.5)  # the central is down longer than central.site_silence: the wait is the point
    await asyncio.to_thread(central.process.start)
    deadline = asyncio.get_running_loop().time() + 4.0
    while asyncio.get_running_loop().time() < deadline:
        assert await offline_events(central) == []
        await asyncio.sleep(0.25)

    edge_process.pause()  # connected, but silent: no last will
    events = await poll(lambda: central.list("/api/events?site=test-site", "events"), "site_offline raised",
                        timeout=10.0)
    [event] = events
    assert event["kind"] == "site_offline" and event["site"] == SITE
    assert event["subject"].startswith("No message from Test Site (test-site) for 3s or longer")
    site = await site_state(central)
    assert site["link"] == "silent" and site["online"] is True and site["offline_event_id"] == event["id"]

    # The central restarted meanwhile: the broker hands it the site's retained status and "online" again, copies
    # of old news that do not end the silence (nor raise it a second time).
    await asyncio.to_thread(stop_and_start, central)
    await poll(lambda: link_is(central, "silent"), "the site silent after the central's restart")
    deadline = asyncio.get_running_loop().time() + 4.0  # longer than central.site_silence
    while asyncio.get_running_loop().time() < deadline:
        assert [(e["id"], e["status"]) for e in await offline_events(central)] == [(event["id"], "active")]
        await asyncio.sleep(0.25)

    edge_process.resume()
    closed = await poll(lambda: _closed(central, event["id"]), "site_offline closed once the site speaks")
    assert closed["status"] == "dismissed"
    assert (await site_state(central))["link"] == "online"
    assert len(await offline_events(central)) == 1


async def test_a_deaf_central_does_not_take_the_sites_for_silent(edge_process: EdgeProcess,  # noqa: F811
                                                                 watchful_central: Central,  # noqa: F811
                                                                 broker: Mosquitto) -> None:
    central = watchful_central
    before = await poll(lambda: link_is(central, "online"), "the site online on the central")
    # The broker crashes (a broker shut down cleanly sends its clients' last wills: the sites would be offline).
    assert broker.process is not None
    broker.process.kill()
    broker.process.wait()
    await asyncio.sleep(4.5)  # the broker is down longer than central.site_silence: the outage is the point
    broker.start()
    await poll(lambda: _heard_after(central, before["last_message_at"]), "the site heard again")
    deadline = asyncio.get_running_loop().time() + 4.0  # longer than central.site_silence
    while asyncio.get_running_loop().time() < deadline:
        assert await offline_events(central) == []
        await asyncio.sleep(0.25)
    assert (await site_state(central))["link"] == "online"


async def test_a_listed_site_never_heard_from_is_offline(edge_process: EdgeProcess, broker: Mosquitto,  # noqa: F811
                                                         tmp_path: Path) -> None:
    sites = [{"id": "test-site", "command_secret": SECRET}, {"id": "ghost-site", "name": "Ghost"}]
    with central_process(tmp_path / "central", broker.port, sites=sites, site_silence=SITE_SILENCE) as central:
        listed = {s["id"]: s for s in (await central.get("/api/sites"))["sites"]}
        assert listed["ghost-site"]["last_message_at"] is None  # listed from the start, heard from or not
        events = await poll(lambda: central.list("/api/events?site=ghost-site", "events"), "site_offline raised")
        assert [e["kind"] for e in events] == ["site_offline"] and events[0]["site"] == {"id": "ghost-site",
                                                                                         "name": "Ghost"}
        assert events[0]["subject"] == ("No message from Ghost (ghost-site) for 3s or longer; "
                                        "it has sent nothing yet")
        assert await central.list("/api/events?site=test-site", "events") == []
        listed = {s["id"]: s for s in (await central.get("/api/sites"))["sites"]}
        assert listed["ghost-site"]["link"] == "silent" and listed["test-site"]["link"] == "online"
        # The central's own event (not the site's row): a guard's dismissal applies here, no command is sent.
        status, dismissed = await central.call("POST", f"/api/events/{events[0]['id']}/dismiss")
        assert status == 200 and dismissed["status"] == "dismissed" and "command" not in dismissed, dismissed


async def _heard_after(central: Central, at: str) -> bool:
    site = await site_state(central)
    return site["link"] == "online" and site["last_message_at"] > at


async def _closed(central: Central, event_id: int) -> dict[str, Any] | None:
    event = await central.get(f"/api/events/{event_id}")
    return event if event["status"] != "active" else None


async def test_an_appliance_has_no_sites(daemon: Daemon) -> None:
    """On an appliance the wall stays as it was: no sites page, no site filter or grouping, no site on cards."""
    await daemon.add_user()
    token = await daemon.token()
    assert (await daemon.send(sample("reolink-person.eml")))["data"][0] == 250
    await daemon.wait_idle()
    status, wall = await daemon.api("GET", "/", token)
    assert status == 200 and "data-event-id" in wall
    assert 'href="/sites"' not in wall and "site-filter" not in wall and "data-site" not in wall
    status, page = await daemon.api("GET", "/sites", token)
    assert status == 200 and "an appliance, not a central station: it has no sites" in page
    assert await daemon.api("GET", "/api/sites", token) == (200, {"sites": []})
    assert await daemon.api("GET", "/api/events?site=test-site", token) == (200, {"events": []})
    status, events = await daemon.api("GET", "/api/events", token)
    assert len(events["events"]) == 1 and "site" not in events["events"][0]
