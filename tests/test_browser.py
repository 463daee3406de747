"""The guard's view in a real browser (Debian's Chromium driven by Playwright): set up, sign in, see an alarm
arrive without a reload, dismiss it, and see another guard's dismissal live."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from conftest import PASSWORD, Daemon, sample
from mailmaker import dvr_mail
from playwright.async_api import Browser, Page, async_playwright, expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root in a container, without a GPU, and with no network beyond this machine.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        await browser.close()


async def sign_in(page: Page, daemon: Daemon, username: str) -> None:
    await page.goto(f"{daemon.url}/login")
    await page.fill('input[name="username"]', username)
    await page.fill('input[name="password"]', PASSWORD)
    await page.click('button[type="submit"]')
    await expect(page.locator("#connection")).to_have_text("live")


def watch_errors(page: Page) -> list[str]:
    """What the page reports as wrong: script errors, console errors, and any dialog (none is expected)."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("dialog", lambda dialog: errors.append("dialog: " + dialog.message))
    return errors


async def test_alarm_appears_live_and_is_dismissed(daemon: Daemon, browser: Browser) -> None:
    page = await (await browser.new_context()).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)

    # First run: the dashboard sends us to setup, which creates the admin and signs us in.
    await page.goto(daemon.url)
    assert page.url.endswith("/setup")
    await page.fill('input[name="username"]', "admin")
    await page.fill('input[name="password"]', PASSWORD)
    await page.click('button[type="submit"]')
    await expect(page.locator("#connection")).to_have_text("live")
    await expect(page.locator("#empty")).to_be_visible()

    # A second guard watches the same wall.
    await daemon.add_user("guard2", "guard")
    other = await (await browser.new_context()).new_page()
    await sign_in(other, daemon, "guard2")

    await page.evaluate("window.notReloaded = true")
    assert (await daemon.send(sample("hikvision-ipc-intrusion.eml")))["data"][0] == 250
    card = page.locator("[data-event-id]")
    await expect(card).to_have_count(1, timeout=5000)
    assert await page.evaluate("window.notReloaded") is True
    await expect(card.locator(".event-type")).to_have_text("Intrusion Detection")
    # vmond's name for the camera, the camera's own name and channel from the mail, the customer.
    await expect(card.locator(".event-where")).to_have_text("Front Door · 后门 (ch 1) · Test Customer")
    await expect(card.locator(".badge")).to_have_text("3 pictures")
    # The card shows the first thumbnail, or once the clip is ready (it may be already) the clip with that
    # thumbnail as its poster: either way the browser loads the picture with its session.
    picture = card.locator("img, video")
    await expect(picture).to_have_count(1)
    url = await picture.evaluate("media => media.tagName === 'IMG' ? media.src : media.poster")
    assert url.endswith("/thumbnail"), url
    width = await page.evaluate(
        "async url => { const img = new Image(); img.src = url; await img.decode(); return img.naturalWidth; }", url)
    assert width > 0
    await expect(other.locator("[data-event-id]")).to_have_count(1, timeout=5000)

    await card.locator('[data-action="dismiss"]').click()
    await expect(page.locator("[data-event-id]")).to_have_count(0)
    await expect(other.locator("[data-event-id]")).to_have_count(0, timeout=5000)
    status, body = await daemon.api("GET", "/api/events?status=dismissed", await daemon.token("admin"))
    assert [e["event_type"] for e in body["events"]] == ["Intrusion Detection"]

    # After a reload the dismissed event stays gone.
    await page.reload()
    await expect(page.locator("#connection")).to_have_text("live")
    await expect(page.locator("[data-event-id]")).to_have_count(0)
    assert errors == []


async def test_the_wall_catches_up_after_a_dropped_connection(daemon: Daemon, browser: Browser) -> None:
    await daemon.add_user("guard1", "guard")
    page = await (await browser.new_context()).new_page()
    await sign_in(page, daemon, "guard1")
    # Drop the page as the server drops a client that falls behind, deliver an alarm while it is away, and let
    # the page reconnect on its own with ?since= and catch up.
    for subscription in list(daemon.services.bus._subscribers):
        subscription.overflowed = True
        subscription.close()
    await expect(page.locator("#connection")).to_have_text("reconnecting…")
    assert (await daemon.send(sample("swann-nvr-human.eml")))["data"][0] == 250
    await expect(page.locator("[data-event-id]")).to_have_count(1, timeout=15000)
    await expect(page.locator("#connection")).to_have_text("live")


async def test_wall_cards_name_the_recorders_camera_and_keep_to_the_order_of_receipt(
        daemon: Daemon, browser: Browser) -> None:
    # Two cards in the page as served, two more arriving live: a recorder's cameras, one with its clock 11
    # minutes behind (the mail took that long) and one two hours ahead. All four are motion (one priority), so
    # the queue has the one received first first, whatever the cameras' clocks say.
    now = datetime.now()
    for mail in (dvr_mail("CAM 1 Drive", "A1", 1, camera_clock=now),
                 dvr_mail("CAM 2 Garage", "A2", 2, camera_clock=now - timedelta(minutes=11))):
        assert (await daemon.send(mail))["data"][0] == 250
    await daemon.wait_idle()
    await daemon.add_user("guard1", "guard")
    page = await (await browser.new_context()).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await sign_in(page, daemon, "guard1")
    for mail in (dvr_mail("CAM 3 <b>Gate</b>", "A3", 3, camera_clock=now + timedelta(hours=2)),
                 dvr_mail("CAM 4 Yard", "A4", 4, camera_clock=now - timedelta(minutes=11))):
        assert (await daemon.send(mail))["data"][0] == 250
    cards = page.locator("[data-event-id]")
    await expect(cards.locator(".event-source")).to_have_text(
        ["CAM 1 Drive (ch 1)", "CAM 2 Garage (ch 2)", "CAM 3 <b>Gate</b> (ch 3)", "CAM 4 Yard (ch 4)"], timeout=5000)
    await expect(cards.nth(2).locator(".event-where")).to_have_text(
        "Front Door · CAM 3 <b>Gate</b> (ch 3) · Test Customer")
    await expect(cards.locator("b")).to_have_count(0)  # the camera's text stays text
    # The camera's clock is shown as such where it is off by more than a minute, on served and live cards alike.
    clocks = [await card.locator(".camera-clock").count() for card in await cards.all()]
    assert clocks == [0, 1, 1, 1]
    status, body = await daemon.api("GET", "/api/events", await daemon.token("guard1"))
    newest = body["events"][0]
    assert newest["camera_name"] == "CAM 4 Yard"
    assert await cards.nth(3).locator(".event-received").get_attribute("datetime") == newest["received_at"]
    clock = cards.nth(3).locator(".camera-clock time")
    assert await clock.get_attribute("datetime") == newest["event_time"]
    # The time of day, or with the date when the camera's day is not the day of receipt (around midnight).
    expected = await page.evaluate(
        """([told, received]) => new Date(told).toDateString() === new Date(received).toDateString()
             ? new Date(told).toLocaleTimeString()
             : new Date(told).toLocaleString([], {dateStyle: "short", timeStyle: "medium"})""",
        [newest["event_time"], newest["received_at"]])
    await expect(cards.nth(3).locator(".camera-clock")).to_have_text("camera clock: " + expected)
    assert errors == []
