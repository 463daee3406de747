"""The guard's view in a real browser (Debian's Chromium driven by Playwright): set up, sign in, see an alarm
arrive without a reload, dismiss it, and see another guard's dismissal live."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
from conftest import PASSWORD, Daemon, sample
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
    await expect(card.locator(".event-where")).to_have_text("Front Door · Test Customer")
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
