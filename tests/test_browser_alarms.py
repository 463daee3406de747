"""Open alarms in Debian's Chromium: the wall's strip and /alarms follow every alarm live; on the alarm page a
typed note survives a supervisor's takeover and a reload, steps are ticked, a missing outcome is a form error,
and N opens the next open alarm."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from conftest import BASE_CONFIG, Daemon, merge, sample
from playwright.async_api import Browser, expect
from test_alarms import an_event
from test_browser import browser, sign_in, watch_errors  # noqa: F401 - the fixture is used by name

from vmond.config import Config

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    plan = [{"text": "Look at the other cameras"}, {"text": "Call the keyholder"}]
    return make_config(accounts=[merge(BASE_CONFIG["accounts"][0], {"action_plan": plan})])


async def test_the_strip_and_the_alarm_list_follow_alarms_live(daemon: Daemon, browser: Browser) -> None:  # noqa: F811
    await daemon.add_user("guard1", "guard")
    await daemon.add_user("boss", "supervisor")
    guard, boss = await daemon.token("guard1"), await daemon.token("boss")
    wall = await (await browser.new_context()).new_page()
    # This PC's clock is 10 minutes fast: ages still count on the appliance's clock, in the strip as on the cards.
    await wall.clock.set_system_time(datetime.now(UTC) + timedelta(minutes=10))
    errors = watch_errors(wall)
    await sign_in(wall, daemon, "guard1")
    listing = await (await browser.new_context()).new_page()
    await sign_in(listing, daemon, "boss")
    await listing.goto(f"{daemon.url}/alarms")
    await expect(listing.locator("#connection")).to_have_text("live")
    await expect(wall.locator("[data-open-alarm-id]")).to_have_count(0)
    await expect(wall.locator("#open-alarms")).to_be_hidden()  # no empty strip

    _, alarm = await daemon.api("POST", f"/api/events/{await an_event(daemon)}/alarm", guard)
    item = wall.locator(f'[data-open-alarm-id="{alarm["id"]}"]')
    await expect(item).to_contain_text("Front Door", timeout=5000)
    await expect(item).to_contain_text("guard1")
    await expect(item).to_have_attribute("href", f"/alarms/{alarm['id']}")
    await expect(item.locator(".open-alarm-age")).to_have_text(re.compile(r"^\d+s$"))
    row = listing.locator(f'[data-alarm-row="{alarm["id"]}"]')
    await expect(row).to_contain_text("guard1", timeout=5000)
    await row.locator("a").first.focus()  # a keyboard user on the list keeps their place as it changes
    await item.focus()  # and on the strip

    await daemon.api("POST", f"/api/alarms/{alarm['id']}/acknowledge", boss)  # changed: both show the new handler
    await expect(item).to_contain_text("boss", timeout=5000)
    await expect(row).to_contain_text("boss", timeout=5000)
    await expect(row.locator("a").first).to_be_focused()
    await expect(item).to_be_focused()
    await an_event(daemon, to="camera-back@monitor.local")  # a card on the wall meanwhile
    await expect(wall.locator("#wall [data-event-id]")).to_have_count(1, timeout=5000)
    await daemon.api("POST", f"/api/alarms/{alarm['id']}/resolve", boss, json={"code": "test"})
    await expect(wall.locator("[data-open-alarm-id]")).to_have_count(0, timeout=5000)
    await expect(wall.locator("#open-alarms")).to_be_hidden()
    # The focused alarm closed, and no other is open: the focus goes on to the wall's first card, not nowhere.
    await expect(wall.locator("#wall [data-event-id]").first).to_be_focused()
    await expect(listing.locator("[data-alarm-row]")).to_have_count(0, timeout=5000)
    await expect(listing.locator("#alarm-rows")).to_contain_text("No alarms.")
    assert errors == []


async def test_the_alarm_page_keeps_the_draft_ticks_steps_and_wants_an_outcome(
        daemon: Daemon, browser: Browser) -> None:  # noqa: F811
    await daemon.add_user("guard1", "guard")
    await daemon.add_user("boss", "supervisor")
    guard, boss = await daemon.token("guard1"), await daemon.token("boss")
    _, first = await daemon.api("POST", f"/api/events/{await an_event(daemon)}/alarm", guard)
    assert (await daemon.send(sample("swann-nvr-human.eml"), to="camera-back@monitor.local"))["data"][0] == 250
    await daemon.wait_idle()
    _, events = await daemon.api("GET", "/api/events?status=active", guard)
    _, second = await daemon.api("POST", f"/api/events/{events['events'][0]['id']}/alarm", boss)

    page = await (await browser.new_context()).new_page()
    errors = watch_errors(page)
    await sign_in(page, daemon, "guard1")
    await page.goto(f"{daemon.url}/alarms/{first['id']}")
    await expect(page.locator("#connection")).to_have_text("live")
    await expect(page.locator("#handler")).to_contain_text("You are handling this alarm")

    # A supervisor takes the alarm over while the guard types: the page changes in place, the draft stays.
    await page.fill('#note-form textarea[name="text"]', "Called Jane, she is on her")
    await page.evaluate("window.stillTheSamePage = true")
    await daemon.api("POST", f"/api/alarms/{first['id']}/acknowledge", boss)
    await expect(page.locator("#handler")).to_contain_text("boss is handling this alarm", timeout=5000)
    await expect(page.locator('[data-action="acknowledge"]')).to_have_text("Take over")
    assert await page.evaluate("window.stillTheSamePage === true")
    await expect(page.locator('#note-form textarea[name="text"]')).to_have_value("Called Jane, she is on her")
    await page.reload()  # ... and a reload (or a dropped connection) too
    await expect(page.locator('#note-form textarea[name="text"]')).to_have_value("Called Jane, she is on her")
    await page.click('#note-form button[type="submit"]')
    await expect(page.locator("#note-list")).to_contain_text("Called Jane, she is on her")
    await expect(page.locator('#note-form textarea[name="text"]')).to_have_value("")  # sent: the draft is gone

    # The action plan: ticking a step records who and when, on the trail, as a sentence.
    await expect(page.locator("[data-step]")).to_have_count(2)
    await page.check('[data-step="2"]')
    await expect(page.locator('[data-step-done="2"]')).to_contain_text("guard1", timeout=5000)
    await expect(page.locator('[data-step="2"]')).to_be_disabled()
    await expect(page.locator("#audit-list")).to_contain_text("guard1 ticked step 2: Call the keyholder")
    await expect(page.locator("#audit-list")).to_contain_text("boss took it over from guard1")

    # Resolving without an outcome: the form again with the error, not a bare 400 page.
    await page.fill('textarea[name="resolution"]', "Nobody there")
    await page.click('[data-action="resolve"]')
    await expect(page.locator('[data-error="code"]')).to_be_visible()
    await expect(page.locator('textarea[name="resolution"]')).to_have_value("Nobody there")
    await page.select_option('select[name="code"]', "false_alarm")
    await page.click('[data-action="resolve"]')
    await expect(page.locator("#state")).to_have_text("resolved")
    await expect(page.locator("#audit-list")).to_contain_text("guard1 resolved it as False alarm: Nobody there")

    # Then the next open alarm is offered: N opens it.
    await expect(page.locator('[data-action="next-alarm"]')).to_have_attribute("href", f"/alarms/{second['id']}")
    await page.keyboard.press("n")
    await page.wait_for_url(re.compile(rf"/alarms/{second['id']}$"))
    await expect(page.locator("#handler")).to_contain_text("boss is handling this alarm")
    assert [e for e in errors if "status of 400" not in e] == []
