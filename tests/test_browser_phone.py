"""A phone (375x812, touch) in Debian's Chromium: no page scrolls sideways, the key hints give way to touch, focus
comes back to the card a guard left the wall from and stays on the wall after a tap; and the shift report draws
its charts for a supervisor."""

from __future__ import annotations

import re

import pytest
from conftest import PASSWORD, Daemon, distinct, sample
from playwright.async_api import Browser, Page, expect
from test_browser import browser, sign_in, watch_errors  # noqa: F401 - the fixture is used by name

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHONE = {"viewport": {"width": 375, "height": 812}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


async def overflow(page: Page, path: str) -> dict[str, object]:
    """Load *path*; what sticks out to the right of the screen (nothing, when the page fits)."""
    await page.goto(path)
    await page.wait_for_load_state("load")
    return await page.evaluate("""() => {
        const width = window.innerWidth;
        const wide = Array.from(document.querySelectorAll("body *"))
            .filter((node) => node.getBoundingClientRect().right > width + 0.5 && node.getClientRects().length)
            .slice(0, 5).map((node) => node.tagName + "." + node.className + " " + node.getBoundingClientRect().right);
        return {scrollWidth: document.documentElement.scrollWidth, innerWidth: width, wide};
    }""")


async def test_a_phone_fits_every_page_and_keeps_the_focus(daemon: Daemon, browser: Browser) -> None:  # noqa: F811
    for n in range(4):
        assert (await daemon.send(distinct(sample("hikvision-ipc-intrusion.eml"), n)))["data"][0] == 250
    await daemon.wait_idle()
    await daemon.add_user("admin", "admin")
    boss = await daemon.token("admin")
    _, events = await daemon.api("GET", "/api/events", boss)
    _, alarm = await daemon.api("POST", f"/api/events/{events['events'][-1]['id']}/alarm", boss)
    await daemon.api("POST", f"/api/events/{events['events'][-2]['id']}/dismiss", boss)  # for the dismissed page
    await daemon.api("POST", f"/api/alarms/{alarm['id']}/notes", boss, json={"text": "Keyholder called " * 12})
    _, accounts = await daemon.api("GET", "/api/accounts", boss)
    account = accounts["accounts"][0]
    camera_id = alarm["camera"]["id"]

    page = await (await browser.new_context(**PHONE)).new_page()
    errors = watch_errors(page)
    await sign_in(page, daemon, "admin")  # the longest menu
    await daemon.api("POST", "/api/users", boss, json={"username": "night-guard-front-door", "password": PASSWORD,
                                                       "role": "guard", "accounts": [account["id"]]})
    for path in ("/", "/alarms?state=all", f"/alarms/{alarm['id']}", f"/accounts/{account['id']}",
                 f"/cameras/{camera_id}", "/cameras", "/dismissed", "/users", "/accounts", "/reports"):
        fit = await overflow(page, daemon.url + path)
        # (A phone widens the layout to fit a page that is too wide: innerWidth then grows past the screen.)
        assert fit["scrollWidth"] <= fit["innerWidth"] == PHONE["viewport"]["width"], (path, fit)

    # The report's charts are drawn on the server, with labelled axes and a bar per alarm hour.
    charts = page.locator("svg.chart-svg")
    await expect(charts).to_have_count(2)
    await expect(charts.first.locator(".chart-x-title")).to_contain_text("hour starting")
    await expect(charts.first.locator('[data-series="Alarms"] rect')).to_have_count(1)
    await expect(charts.nth(1).locator(".chart-y-title")).to_have_text("alarms")

    # On a touch screen the keyboard hints are not shown.
    await page.goto(daemon.url + "/")
    cards = page.locator("[data-event-id]")
    await expect(cards).to_have_count(2)
    await expect(page.locator(".keys")).to_be_hidden()

    # A tap on Dismiss leaves the focus on the wall (the next card), not lost on the page.
    first_id = await cards.first.get_attribute("data-event-id")
    await cards.first.locator('[data-action="dismiss"]').tap()
    await expect(cards).to_have_count(1)
    await expect(cards.first).to_be_focused()

    # Back from an event's page, the focus is on the card the guard opened it from.
    assert first_id != await cards.first.get_attribute("data-event-id")
    opened = await cards.first.get_attribute("data-event-id")
    await cards.first.locator(".event-media").tap()
    await page.wait_for_url(re.compile(r"/events/\d+$"))
    await page.go_back()
    await expect(page.locator(f'[data-event-id="{opened}"]')).to_be_focused()
    assert errors == []
