"""Which camera it was and when: the camera's own name and channel from the mail on the Event, the pages and the
alarm; everything ordered by the time of receipt, and the camera's clock shown as such when it is off."""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta

import pytest
from conftest import Daemon
from mailmaker import dvr_mail
from test_web import browser_session, log_in

from vmond.web.display import camera_clock, source_label


async def send(daemon: Daemon, raw: bytes) -> None:
    assert (await daemon.send(raw))["data"][0] == 250
    await daemon.wait_idle()


async def page_text(daemon: Daemon, path: str) -> str:
    async with browser_session() as http:
        await log_in(daemon, http, "guard1")
        async with http.get(f"{daemon.url}{path}") as response:
            assert response.status == 200
            return await response.text()


def visible(page: str) -> str:
    """The page's text as a reader sees it (tags dropped, entities decoded, spaces collapsed)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


async def test_the_camera_name_from_the_mail_is_on_the_event_the_pages_and_the_alarm(
        daemon: Daemon, guard: str) -> None:
    await send(daemon, dvr_mail("CAM 2 Garage", "A2", 2))
    status, body = await daemon.api("GET", "/api/events", guard)
    (event,) = body["events"]
    assert (event["camera"]["name"], event["camera_name"], event["channel"]) == ("Front Door", "CAM 2 Garage", "2")

    page = await page_text(daemon, f"/events/{event['id']}")
    assert '<bdi class="event-source">CAM 2 Garage (ch 2)</bdi>' in page
    assert "Front Door · CAM 2 Garage (ch 2) · Test Customer" in visible(page)

    status, alarm = await daemon.api("POST", f"/api/events/{event['id']}/alarm", guard)
    assert status == 201 and (alarm["camera_name"], alarm["channel"]) == ("CAM 2 Garage", "2")
    alarm_page = await page_text(daemon, f"/alarms/{alarm['id']}")
    assert "Front Door · CAM 2 Garage (ch 2) · Test Customer" in visible(alarm_page)
    assert "Front Door · CAM 2 Garage (ch 2)" in visible(await page_text(daemon, "/alarms"))


async def test_a_hostile_camera_name_is_text(daemon: Daemon, guard: str) -> None:
    await send(daemon, dvr_mail("<img src=x onerror=alert(1)>\u202eGarage", "A2", 2))
    status, body = await daemon.api("GET", "/api/events", guard)
    assert body["events"][0]["camera_name"] == "<img src=x onerror=alert(1)> Garage"
    page = await page_text(daemon, f"/events/{body['events'][0]['id']}")
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt; Garage (ch 2)" in page
    wall = await page_text(daemon, "/")
    assert "<img src=x" not in wall and "\\u003cimg src=x onerror=alert(1)\\u003e Garage" in wall


async def test_everything_is_ordered_by_receipt_and_an_off_clock_is_shown_as_such(
        daemon: Daemon, guard: str) -> None:
    # Received in this order: a camera with a good clock, one whose clock is two hours ahead, and a mail the
    # camera dated 11 minutes ago (it took that long to get through). The last one received is the newest.
    now = datetime.now()
    await send(daemon, dvr_mail("Good clock", "A1", 1, camera_clock=now))
    await send(daemon, dvr_mail("Ahead", "A2", 2, camera_clock=now + timedelta(hours=2)))
    await send(daemon, dvr_mail("Late", "A3", 3, camera_clock=now - timedelta(minutes=11)))
    status, body = await daemon.api("GET", "/api/events", guard)
    events = body["events"]
    assert [e["camera_name"] for e in events] == ["Late", "Ahead", "Good clock"]
    late, ahead, good = events
    assert late["received_at"] > ahead["received_at"] > good["received_at"]
    assert late["event_time"] < good["event_time"] < ahead["event_time"]  # the cameras' clocks disagree

    # The wall is a queue: all three are motion (one priority), so the one received first is first.
    wall = await page_text(daemon, "/")
    listed = re.findall(r'"camera_name": "([^"]+)"', wall)
    assert listed == ["Good clock", "Ahead", "Late"]

    # The event page files it by receipt and shows the camera's clock as such, only where it is off.
    for event, off in ((late, True), (ahead, True), (good, False)):
        page = await page_text(daemon, f"/events/{event['id']}")
        assert f'received <time datetime="{event["received_at"]}">' in page
        shown = re.search(r'camera clock: <time datetime="([^"]+)">', page)
        assert (shown.group(1) if shown else None) == (event["event_time"] if off else None)

    # Alarms raised in the order good, late: newest raised first, whatever the cameras' clocks said; the alarm
    # page shows the camera's clock too.
    alarms = {}
    for event in (good, late):
        status, alarms[event["camera_name"]] = await daemon.api("POST", f"/api/events/{event['id']}/alarm", guard)
        assert status == 201
    status, body = await daemon.api("GET", "/api/alarms", guard)
    assert [a["camera_name"] for a in body["alarms"]] == ["Late", "Good clock"]
    assert body["alarms"][0]["received_at"] == late["received_at"]
    page = await page_text(daemon, f"/alarms/{alarms['Late']['id']}")
    assert f'camera clock: <time datetime="{late["event_time"]}">' in page
    assert "camera clock" not in await page_text(daemon, f"/alarms/{alarms['Good clock']['id']}")


@pytest.mark.parametrize(("fields", "label"), [
    ({"camera_name": "CAM 2 Garage", "channel": "2"}, "CAM 2 Garage (ch 2)"),
    ({"camera_name": "Front Yard", "channel": "IP-CH1"}, "Front Yard (IP-CH1)"),
    ({"camera_name": None, "channel": "D3"}, "ch D3"),
    ({"camera_name": "Gate", "channel": None}, "Gate"),
    ({"camera_name": "front door", "channel": None}, ""),  # the name vmond knows it by already
    ({"camera_name": None, "channel": None}, ""),
])
def test_source_label(fields: dict[str, str | None], label: str) -> None:
    assert source_label({"camera": {"name": "Front Door"}, **fields}) == label


@pytest.mark.parametrize(("offset", "shown"), [(0, False), (59, False), (-60, False), (61, True), (-660, True)])
def test_camera_clock_is_shown_beyond_a_minute(offset: int, shown: bool) -> None:
    received = datetime(2026, 1, 2, 11, 11, 3).astimezone()
    told = (received + timedelta(seconds=offset)).isoformat()
    event = {"received_at": received.isoformat(), "event_time": told}
    assert camera_clock(event) == (told if shown else None)
