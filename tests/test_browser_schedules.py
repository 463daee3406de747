"""Schedules and snooze on the wall, in Debian's Chromium: an event of a snoozed camera or of an account that is
not monitored gets no card, live or after a reload, and no sound; the wall counts the snoozed cameras."""

from __future__ import annotations

import pytest
from conftest import Daemon, distinct, sample
from playwright.async_api import Browser, expect
from test_browser import browser, sign_in, watch_errors  # noqa: F401 - the fixture is used by name
from test_browser_queue import COUNT_TONES

pytestmark = [pytest.mark.browser, pytest.mark.slow]


async def _send(daemon: Daemon, n: int, to: str) -> None:
    assert (await daemon.send(distinct(sample("reolink-person.eml"), n), to=to))["data"][0] == 250


async def test_flagged_events_stay_off_the_wall_and_silent(daemon: Daemon, browser: Browser) -> None:  # noqa: F811
    await daemon.add_user()
    await daemon.add_user("guard1", "guard")
    token = await daemon.token()
    listed = (await daemon.api("GET", "/api/cameras", token))[1]["cameras"]
    cameras = {c["smtp_address"].split("@")[0]: c for c in listed}
    account_id = cameras["camera-front"]["account"]["id"]
    context = await browser.new_context()
    await context.add_init_script(COUNT_TONES)
    page = await context.new_page()
    errors = watch_errors(page)
    await sign_in(page, daemon, "guard1")
    await page.click("#sound")
    await page.wait_for_function("window.__tones.length > 0")  # the button's own confirmation
    await page.evaluate("window.__tones = []")
    cards = page.locator("#wall > [data-event-id]")

    await _send(daemon, 1, "camera-back@monitor.local")  # what one new card sounds like
    await expect(cards).to_have_count(1)
    await page.wait_for_function("window.__tones.length > 0")
    one_beep = len(await page.evaluate("window.__tones"))

    status, _ = await daemon.api("POST", f"/api/cameras/{cameras['camera-front']['id']}/snooze", token, json={})
    assert status == 200
    await _send(daemon, 2, "camera-front@monitor.local")  # snoozed
    await daemon.wait_idle()
    status, _ = await daemon.api("POST", f"/api/accounts/{account_id}/disarm", token, json={})
    assert status == 200
    await _send(daemon, 3, "camera-back@monitor.local")  # unmonitored
    await daemon.wait_idle()
    status, _ = await daemon.api("POST", f"/api/accounts/{account_id}/arm", token, json={})
    assert status == 200
    await _send(daemon, 4, "camera-back@monitor.local")  # on the wall: the sign that the others went by
    await expect(cards).to_have_count(2)
    assert len(await page.evaluate("window.__tones")) == 2 * one_beep  # the two flagged events were not heard
    flagged = (await daemon.api("GET", "/api/events?status=active", token))[1]["events"]
    assert sorted(f for e in flagged for f in e["flags"]) == ["snoozed", "unmonitored"]

    await page.reload()
    await expect(page.locator("#connection")).to_have_text("live")
    await expect(cards).to_have_count(2)
    await expect(page.locator("[data-snoozed-cameras]")).to_have_text("1 camera snoozed")
    assert errors == []
