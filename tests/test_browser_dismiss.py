"""Dismiss made safe and the loud link, in Debian's Chromium: undo, bulk dismiss, restore from the dismissed page;
the banner, the tone and the held actions while the daemon is away, and the wall brought up to date after."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import BASE_CONFIG, Daemon, distinct, sample, write_config
from helpers import free_port
from playwright.async_api import Browser, Route, expect
from test_browser import browser, sign_in, watch_errors  # noqa: F401 - the fixture is used by name

from vmond.config import load_config
from vmond.daemon import running

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Counts the tones a page starts (WebAudio oscillators), for the test to hear the link's alarm.
COUNT_TONES = """
  const start = OscillatorNode.prototype.start;
  OscillatorNode.prototype.start = function (...args) {
    window.tones = (window.tones || 0) + 1;
    return start.apply(this, args);
  };
"""


async def _send(daemon: Daemon, n: int) -> None:
    raw = sample("swann-nvr-human.eml")
    for i in range(n):
        assert (await daemon.send(distinct(raw, i)))["data"][0] == 250


async def test_undo_bulk_dismiss_and_restore(daemon: Daemon, browser: Browser) -> None:  # noqa: F811
    await daemon.add_user("guard1", "guard")
    await daemon.add_user("boss", "supervisor")
    page = await (await browser.new_context()).new_page()
    errors = watch_errors(page)
    await sign_in(page, daemon, "guard1")
    await _send(daemon, 3)
    cards = page.locator("[data-event-id]")
    await expect(cards).to_have_count(3, timeout=5000)
    ids = [int(i) for i in await cards.evaluate_all("cards => cards.map(c => c.dataset.eventId)")]

    # Dismiss, then Undo within the ten seconds: the card is back, and active on the server.
    await page.locator(f'[data-event-id="{ids[0]}"] [data-action="dismiss"]').click()
    await expect(cards).to_have_count(2)
    undo = page.locator('[data-action="undo"]')
    await expect(undo).to_be_visible()
    await undo.click()
    await expect(page.locator(f'[data-event-id="{ids[0]}"]')).to_be_visible()
    await expect(undo).to_be_hidden()
    token = await daemon.token("guard1")
    status, event = await daemon.api("GET", f"/api/events/{ids[0]}", token)
    assert event["status"] == "active"

    # Select two cards (a checkbox, and X on the focused card) and dismiss them together.
    await page.locator(f'[data-event-id="{ids[1]}"] input[data-select]').check()
    await expect(page.locator(f'[data-event-id="{ids[1]}"]')).to_be_focused()  # the keys work on it at once
    await page.locator(f'[data-event-id="{ids[2]}"]').focus()
    await page.keyboard.press("x")
    await expect(page.locator(".select-count")).to_have_text("2 cards selected")
    await page.locator('[data-action="dismiss-selected"]').click()
    await expect(cards).to_have_count(1)
    await expect(cards).to_have_attribute("data-event-id", str(ids[0]))
    await expect(page.locator(".undo-text")).to_have_text("2 events dismissed")
    status, body = await daemon.api("GET", "/api/events?status=dismissed", token)
    assert sorted(e["id"] for e in body["events"]) == sorted(ids[1:])

    # A supervisor restores one from the dismissed page: the guard's wall has it back at once.
    boss = await (await browser.new_context()).new_page()
    await sign_in(boss, daemon, "boss")
    await boss.click('nav a[href="/dismissed"]')
    rows = boss.locator("[data-dismissed-event-id]")
    await expect(rows).to_have_count(2)
    await expect(rows.locator(".dismissed-by")).to_have_text(["guard1", "guard1"])
    await boss.locator(f'[data-dismissed-event-id="{ids[1]}"] [data-action="restore"]').click()
    await expect(rows).to_have_count(1)
    await expect(page.locator(f'[data-event-id="{ids[1]}"]')).to_be_visible(timeout=5000)
    await expect(cards).to_have_count(2)
    assert errors == []


async def test_the_link_is_loud_while_the_daemon_is_away(tmp_path: Path, browser: Browser) -> None:  # noqa: F811
    with_plan = [{**BASE_CONFIG["accounts"][0], "action_plan": [{"text": "Call the keyholder"}]}]
    config = load_config(write_config(tmp_path, web={"listen": f"127.0.0.1:{free_port()}"}, accounts=with_plan))
    context = await browser.new_context()
    await context.add_init_script(COUNT_TONES)
    page = await context.new_page()
    body = page.locator("body")
    banner = page.locator("#link-banner")
    cards = page.locator("[data-event-id]")
    async with running(config) as services:
        daemon = Daemon(services)
        await daemon.add_user("guard1", "guard")
        await sign_in(page, daemon, "guard1")
        await expect(body).to_have_attribute("data-connection", "live")
        await expect(banner).to_be_hidden()
        await _send(daemon, 3)
        await expect(cards).to_have_count(3, timeout=5000)
        first, second, third = [int(i) for i in await cards.evaluate_all("cards => cards.map(c => c.dataset.eventId)")]
        # An alarm page in another tab: its link is watched the same way.
        status, alarm = await daemon.api("POST", f"/api/events/{third}/alarm", await daemon.token("guard1"))
        assert status == 201
        await expect(cards).to_have_count(2, timeout=5000)
        alarm_page = await context.new_page()
        await alarm_page.goto(f"{daemon.url}/alarms/{alarm['id']}")
        await expect(alarm_page.locator("body")).to_have_attribute("data-connection", "live")
        draft = alarm_page.locator('#note-form textarea[name="text"]')
        await draft.fill("Keyholder is on the way")  # typed, not sent: it must outlive the outage
        await page.bring_to_front()
        await page.keyboard.press("Shift")  # the guard has touched the page: sound may play
    # The daemon is gone: reconnecting at once, down (banner, tone, actions held) after five seconds.
    await expect(body).to_have_attribute("data-connection", "reconnecting")
    assert await banner.is_hidden()
    await expect(body).to_have_attribute("data-connection", "down", timeout=8000)
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("No connection")
    await expect(page.locator("#connection")).to_have_text("down")
    assert await page.evaluate("window.tones || 0") > 0
    dismiss = page.locator(f'[data-event-id="{second}"] [data-action="dismiss"]')
    await expect(dismiss).to_be_disabled()
    await page.locator(f'[data-event-id="{second}"]').focus()
    await page.keyboard.press("d")  # held: nothing is sent, nothing disappears
    await expect(cards).to_have_count(2)
    await expect(alarm_page.locator("body")).to_have_attribute("data-connection", "down")
    await expect(alarm_page.locator("#link-banner")).to_be_visible()
    await expect(alarm_page.locator('[data-action="resolve"]')).to_be_disabled()
    await expect(alarm_page.locator("[data-step]")).to_be_disabled()  # a step is an action too
    # Meanwhile the first event was dismissed elsewhere (as another guard's wall could while this one was away).
    with sqlite3.connect(tmp_path / "data" / "vmond.db") as db:
        db.execute("UPDATE alarm_event SET status = 'dismissed' WHERE id = ?", (first,))
    # The first reload of the wall after the restart fails (a busy server): the wall keeps its cards and tries again.
    refused: list[str] = []

    async def busy_once(route: Route) -> None:
        if refused:
            await route.continue_()
        else:
            refused.append(route.request.url)
            await route.fulfill(status=503, content_type="application/json", body='{"error": "busy"}')
    await page.route("**/api/events?status=active*", busy_once)
    async with running(config) as services:
        daemon = Daemon(services)
        await expect(body).to_have_attribute("data-connection", "live", timeout=15000)
        await expect(banner).to_be_hidden()
        # Back in step with the server: the card dismissed meanwhile is gone, the held one stayed.
        await expect(cards).to_have_count(1, timeout=5000)
        await expect(cards).to_have_attribute("data-event-id", str(second))
        assert refused
        await expect(dismiss).to_be_enabled()
        await expect(page.locator(f'[data-event-id="{second}"]')).to_be_focused()  # the keys stay where they were
        status, event = await daemon.api("GET", f"/api/events/{second}", await daemon.token("guard1"))
        assert event["status"] == "active"
        await dismiss.click()
        await expect(cards).to_have_count(0)
        await expect(alarm_page.locator("body")).to_have_attribute("data-connection", "live", timeout=15000)
        await expect(alarm_page.locator('[data-action="resolve"]')).to_be_enabled()
        await expect(alarm_page.locator("[data-step]")).to_be_enabled()
        await expect(draft).to_have_value("Keyholder is on the way")  # the draft survived the reconnect
