"""A central station's wall and sites page in Debian's Chromium (issue 18): a mirrored event's card names its site,
the wall filters and groups by site, an edge killed shows as ``site_offline`` on the wall and as offline on the
sites page without a reload, its return takes the card away again, and open alarms name their site."""

from __future__ import annotations

import asyncio

import pytest
from centralsite import Central, EdgeProcess, edge_process, poll, watchful_central  # noqa: F401 - fixtures
from conftest import sample, smtp_send
from playwright.async_api import Browser, expect
from test_browser import browser, sign_in, watch_errors  # noqa: F401 - the fixture is used by name

pytestmark = [pytest.mark.browser, pytest.mark.slow]


async def test_sites_on_the_central_wall_and_sites_page(edge_process: EdgeProcess,  # noqa: F811
                                                        watchful_central: Central,  # noqa: F811
                                                        browser: Browser) -> None:  # noqa: F811
    central = watchful_central
    # A mail without pictures: fetching a site's media is another part of the central's work.
    reply = await asyncio.to_thread(smtp_send, edge_process.process.smtp_port, sample("reolink-person.eml"),
                                    "camera-front@monitor.local")
    assert reply["data"][0] == 250
    await poll(lambda: central.list("/api/events", "events"), "the edge's event on the central")

    context = await browser.new_context()
    wall = await context.new_page()
    errors = watch_errors(wall)
    await sign_in(wall, central, "admin")  # type: ignore[arg-type] - it needs only the url
    cards = wall.locator("#wall > [data-event-id]")
    await expect(cards).to_have_count(1)
    await expect(cards.first).to_have_attribute("data-site", "test-site")
    await expect(cards.first.locator(".event-site")).to_have_text("Test Site")
    await expect(wall.locator("#site-filter option")).to_have_text(["All sites", "Test Site (test-site)"])

    sites = await context.new_page()
    sites_errors = watch_errors(sites)
    await sites.goto(f"{central.url}/sites")
    await expect(sites.locator("#connection")).to_have_text("live")
    row = sites.locator('[data-site-id="test-site"]')
    await expect(row).to_have_attribute("data-link", "online")
    await expect(row.locator('[data-label="Version"]')).not_to_have_text("—")
    await expect(row.locator('[data-label="Cameras"]')).to_have_text("2")
    await expect(row.locator('[data-label="Active events"]')).to_have_text("1")

    # The edge dies: its last will raises site_offline, live on both pages.
    edge_process.kill()
    offline = wall.locator('#wall > [data-kind="site_offline"]')
    await expect(offline).to_have_count(1, timeout=5000)
    await expect(offline).to_have_attribute("data-site", "test-site")
    await expect(offline.locator(".event-where")).to_have_text("Test Site")
    await expect(cards).to_have_count(2)
    await expect(row).to_have_attribute("data-link", "offline")
    await expect(row.locator('[data-label="Link"]')).to_contain_text("offline")
    await expect(row.locator('[data-label="Active events"]')).to_have_text("2")

    # Grouped by site: one heading over the site's cards, still in queue order (site_offline is priority 2).
    await wall.check("#group-by-site")
    await expect(wall.locator("#wall > .site-group")).to_have_text(["Test Site"])
    assert await wall.locator("#wall > *").evaluate_all("nodes => nodes.map(n => n.dataset.kind || 'heading')") \
        == ["heading", "person", "site_offline"]
    await wall.uncheck("#group-by-site")
    await expect(wall.locator("#wall > .site-group")).to_have_count(0)

    # Filtered by site, from the sites page's link and by the filter's choice.
    await row.locator("td a").first.click()
    await sites.wait_for_url(f"{central.url}/?site=test-site")
    await expect(sites.locator("#wall > [data-event-id]")).to_have_count(2)
    await sites.goto(f"{central.url}/?site=another-site")
    await expect(sites.locator("#wall > [data-event-id]")).to_have_count(0)
    await expect(sites.locator("#empty")).to_be_visible()
    await sites.select_option("#site-filter", "")
    await sites.wait_for_url(f"{central.url}/?site=")
    await expect(sites.locator("#wall > [data-event-id]")).to_have_count(2)

    # Back: the card goes (closed by vmond), the sites page says online again.
    await asyncio.to_thread(edge_process.start)
    await expect(offline).to_have_count(0, timeout=10000)
    await sites.goto(f"{central.url}/sites")
    await expect(sites.locator('[data-site-id="test-site"]')).to_have_attribute("data-link", "online")

    # Lost again, and this time a guard raises an alarm for it (the central's own event: worked here): the
    # open-alarms strip and the alarms list name the site.
    edge_process.kill()
    await expect(offline).to_have_count(1, timeout=5000)
    await offline.locator('[data-action="alarm"]').click()
    await wall.wait_for_url(f"{central.url}/alarms/*")
    await wall.goto(f"{central.url}/")
    strip = wall.locator('[data-open-alarm-id][data-site="test-site"]')
    await expect(strip).to_have_count(1)
    await expect(strip.locator(".open-alarm-site")).to_have_text("Test Site")
    await wall.goto(f"{central.url}/alarms")
    await expect(wall.locator('#alarm-rows [data-label="Site"]')).to_have_text(["Test Site"])
    assert errors == [] and sites_errors == [], (errors, sites_errors)
