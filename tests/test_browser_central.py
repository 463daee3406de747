"""A central station's pages in Debian's Chromium (issue 18): an action on a site's event shows as sent and waiting
on its wall card until the site has done it; the alarm page shows live a command the site refused, and why."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from centralsite import Central, central, poll, until_edge_listens  # noqa: F401 - fixtures
from conftest import distinct, sample
from mosquitto import Mosquitto
from playwright.async_api import Browser, expect
from test_browser import browser, sign_in, watch_errors  # noqa: F401 - the fixture is used by name
from test_central_commands import broker, edge_daemon, mirrored_event  # noqa: F401 - a broker that keeps sessions

from vmond.config import Config

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.usefixtures("quick_mqtt")]


async def test_the_wall_and_the_alarm_page_show_what_became_of_the_commands(
        make_config: Callable[..., Config], broker: Mosquitto, central: Central,  # noqa: F811
        browser: Browser) -> None:  # noqa: F811
    async with edge_daemon(make_config, broker.port) as edge:
        await until_edge_listens(broker.port)
        _, event_id = await mirrored_event(edge, central)
    page = await (await browser.new_context()).new_page()
    errors = watch_errors(page)
    # The pictures are not fetched from the site yet (the media cache's work, not this test's): their failures
    # are left out, every other failed request counts.
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 and "/media/" not in r.url
            else None)
    await sign_in(page, central, "admin")  # type: ignore[arg-type] - it needs only the url
    card = page.locator(f'[data-event-id="{event_id}"]')
    await expect(card).to_be_visible()

    # The edge is away: the dismissal waits, and the card says so; once the edge is back it is done and gone.
    await card.locator('[data-action="dismiss"]').click()
    await expect(card.locator(".event-command")).to_have_text("Dismiss: sent to Test Site, waiting")
    await expect(card.locator('[data-action="dismiss"]')).to_be_disabled()
    async with edge_daemon(make_config, broker.port, again=True) as edge:
        await expect(card).to_have_count(0, timeout=20_000)
        await page.goto(f"{central.url}/events/{event_id}")
        await expect(page.locator("#status")).to_have_text("dismissed")
        await expect(page.locator('#command-list [data-state="done"]')).to_contain_text("Dismiss: done at Test Site")

        # An alarm the edge resolved itself: the operator's late resolution is refused, live on the alarm page.
        token = await edge.token()
        await edge.send(distinct(sample("hikvision-ipc-intrusion.eml"), 1))
        await edge.wait_idle()
        _, events = await edge.api("GET", "/api/events", token)
        status, alarm = await edge.api("POST", f"/api/events/{events['events'][0]['id']}/alarm", token)
        assert status == 201, alarm
        status, _ = await edge.api("POST", f"/api/alarms/{alarm['id']}/resolve", token, json={"code": "test"})
        assert status == 200
        mirrored = await poll(lambda: _resolved_alarm(central), "the resolved alarm on the central", timeout=20)
        await page.goto(f"{central.url}/alarms/{mirrored['id']}")
        await expect(page.locator("#connection")).to_have_text("live")
        status, sent = await central.call("POST", f"/api/alarms/{mirrored['id']}/resolve", {"code": "false_alarm"})
        assert status == 202, sent
        refused = page.locator(f'#command-list [data-command-id="{sent["command"]["id"]}"]')
        await expect(refused).to_have_attribute("data-state", "refused", timeout=20_000)
        await expect(refused).to_contain_text("Resolve: refused by Test Site: resolved locally at ")

        # The page's own form (a note) goes the same way: back on the page, it is listed, and refused as well.
        await page.fill('#note-form textarea[name="text"]', "called the keyholder")
        await page.click('#note-form button[type="submit"]')
        note = page.locator("#command-list li").first
        await expect(note).to_contain_text("Note: ")
        await expect(note).to_have_attribute("data-state", "refused", timeout=20_000)
        commands = (await central.get(f"/api/alarms/{mirrored['id']}"))["commands"]
        assert [(c["action"], c["state"]) for c in commands] == [("note", "refused"), ("resolve", "refused")]
    assert [e for e in errors if not e.startswith("Failed to load resource")] == [] and failed == [], (errors, failed)


async def _resolved_alarm(station: Central) -> dict[str, Any] | None:
    alarms = await station.list("/api/alarms?state=resolved", "alarms")
    return alarms[0] if alarms else None
