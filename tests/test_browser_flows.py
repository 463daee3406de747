"""The guard's and the admin's flows in Debian's Chromium: keyboard, alarm page, notes, resolve, restart, admin."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import Daemon, sample, write_config
from helpers import free_port
from playwright.async_api import Browser, expect
from test_browser import browser, sign_in, watch_errors  # noqa: F401 - the fixture is used by name

from vmond.config import load_config
from vmond.daemon import running

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HOSTILE = ('<img src=x onerror="window.__pwned=1">', '"><script>window.__pwned=2</script>')


async def test_guard_flow_with_the_keyboard(daemon: Daemon, browser: Browser) -> None:  # noqa: F811
    await daemon.add_user("guard1", "guard")
    await daemon.add_user("guard2", "guard")
    page = await (await browser.new_context()).new_page()
    errors = watch_errors(page)
    await sign_in(page, daemon, "guard1")
    other = await (await browser.new_context()).new_page()
    await sign_in(other, daemon, "guard2")

    for name in ("amcrest-tamper.eml", "hikvision-ipc-intrusion.eml"):
        assert (await daemon.send(sample(name)))["data"][0] == 250
    cards = page.locator("[data-event-id]")
    await expect(cards).to_have_count(2, timeout=5000)
    await expect(other.locator("[data-event-id]")).to_have_count(2, timeout=5000)

    # Arrow keys move the focus; D dismisses the focused card; the other guard sees it go.
    await page.keyboard.press("ArrowRight")
    await expect(cards.first).to_be_focused()
    # The queue: both are priority 1 (tamper, intrusion), so the one received first comes first.
    await expect(cards.first.locator(".event-type")).to_have_text("Tamper Detect")
    await page.keyboard.press("ArrowRight")
    await expect(cards.nth(1)).to_be_focused()
    await page.keyboard.press("ArrowLeft")
    await page.keyboard.press("d")
    await expect(cards).to_have_count(1)
    await expect(cards.first).to_be_focused()  # the focus follows the queue to the card now first
    await expect(other.locator("[data-event-id]")).to_have_count(1, timeout=5000)

    # A raises an alarm on the focused card and opens the alarm page.
    await cards.first.focus()
    await page.keyboard.press("a")
    await page.wait_for_url(re.compile(r"/alarms/\d+$"))
    await expect(page.locator("#handler")).to_contain_text("You are handling this alarm")
    await expect(page.locator(".pictures img")).to_have_count(3)
    await expect(page.locator('a[href="tel:+15550100"]')).to_have_text("+15550100")
    await expect(other.locator("[data-event-id]")).to_have_count(0, timeout=5000)  # off the wall for everyone

    # The second guard opens the same alarm: sees who handles it; the first sees that someone else looks.
    await other.goto(page.url)
    await expect(other.locator("#handler")).to_contain_text("guard1 is handling this alarm")
    await expect(page.locator("#viewers")).to_contain_text("guard2", timeout=5000)

    await page.fill('textarea[name="text"]', "Called Jane Keyholder: on her way")
    await page.click('#note-form button[type="submit"]')
    await expect(page.locator("#note-list")).to_contain_text("Called Jane Keyholder: on her way")
    await expect(other.locator("#note-list")).to_contain_text("Called Jane Keyholder", timeout=5000)

    await page.select_option('select[name="code"]', "keyholder_attended")
    await page.click('[data-action="resolve"]')
    await expect(page.locator("#state")).to_have_text("resolved")
    await expect(page.locator("#handler")).to_contain_text("Keyholder informed or attended")
    await expect(other.locator("#state")).to_have_text("resolved", timeout=5000)
    await expect(page.locator("#audit-list li")).to_have_count(5)
    assert errors == []


async def test_hostile_mail_renders_as_text(daemon: Daemon, browser: Browser) -> None:  # noqa: F811
    raw = (f"Subject: {HOSTILE[0]}\r\nFrom: cam@cam.lan\r\nMIME-Version: 1.0\r\n"
           'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n'
           f'--b\r\nContent-Type: application/octet-stream; name="{HOSTILE[1]}.bin"\r\n\r\nMZ\r\n--b--\r\n').encode()
    await daemon.add_user("guard1", "guard")
    page = await (await browser.new_context()).new_page()
    errors = watch_errors(page)
    await sign_in(page, daemon, "guard1")
    assert (await daemon.send(raw))["data"][0] == 250
    card = page.locator("[data-event-id]")
    await expect(card.locator(".event-type")).to_have_text(HOSTILE[0], timeout=5000)
    await card.locator('[data-action="alarm"]').click()
    await page.wait_for_url(re.compile(r"/alarms/\d+$"))
    await expect(page.locator("h1")).to_contain_text(HOSTILE[0])
    await page.goto(daemon.url + "/events/" + await page.evaluate("document.body.dataset.alarmId"))
    assert await page.evaluate("window.__pwned") is None
    assert errors == []


async def test_a_server_restart_loses_nothing_on_the_wall(tmp_path: Path, browser: Browser) -> None:  # noqa: F811
    config = load_config(write_config(tmp_path, web={"listen": f"127.0.0.1:{free_port()}"}))
    async with running(config) as services:
        daemon = Daemon(services)
        await daemon.add_user("guard1", "guard")
        page = await (await browser.new_context()).new_page()
        await sign_in(page, daemon, "guard1")
        assert (await daemon.send(sample("amcrest-tamper.eml")))["data"][0] == 250
        await expect(page.locator("[data-event-id]")).to_have_count(1, timeout=5000)
    await expect(page.locator("#connection")).to_have_text("reconnecting…")
    async with running(config) as services:
        daemon = Daemon(services)
        await expect(page.locator("#connection")).to_have_text("live", timeout=15000)
        assert (await daemon.send(sample("swann-nvr-human.eml")))["data"][0] == 250
        await expect(page.locator("[data-event-id]")).to_have_count(2, timeout=5000)
        # The queue: both priority 1, the one received first first.
        await expect(page.locator(".event-type")).to_have_text(["Tamper Detect", "Human"])


async def test_admin_creates_account_and_camera_that_receives_mail(daemon: Daemon,
                                                                   browser: Browser) -> None:  # noqa: F811
    await daemon.add_user("root", "admin")
    page = await (await browser.new_context()).new_page()
    errors = watch_errors(page)
    await sign_in(page, daemon, "root")
    await page.click('nav a[href="/accounts"]')
    await page.click('a[href="/accounts/new"]')
    await page.fill('input[name="name"]', "Bakery Smith")
    await page.fill('textarea[name="address"]', "3 Mill Lane")
    await page.fill('input[name="contacts-0-name"]', "Sam Smith")
    await page.fill('input[name="contacts-0-phone"]', "+15550199")
    await page.click('button[type="submit"].primary')
    await expect(page.locator("h1")).to_contain_text("Bakery Smith")
    await expect(page.locator('input[name="contacts-0-phone"]')).to_have_value("+15550199")

    await page.click('nav a[href="/cameras"]')
    await page.click("details.new-camera summary")
    await page.fill('details.new-camera input[name="name"]', "Back Door")
    await page.select_option('details.new-camera select[name="account_id"]', label="Bakery Smith")
    await page.click('details.new-camera button[type="submit"]')
    await expect(page.locator("h1")).to_contain_text("Back Door")
    address = await page.locator("dl.facts code").first.text_content()
    assert address and re.fullmatch(r"camera-[a-z2-9]{5}@monitor\.local", address)

    assert (await daemon.send(sample("reolink-person.eml"), to=address))["data"][0] == 250
    await page.click('nav a[href="/"]')
    card = page.locator("[data-event-id]")
    # vmond's name for the camera, the name the camera gives itself in the mail, the customer.
    await expect(card.locator(".event-where")).to_have_text("Back Door · My Camera · Bakery Smith", timeout=5000)
    assert errors == []
