"""A central station's pictures in Debian's Chromium (issue 18): the wall shows a site's event with its thumbnail,
the event page its full pictures, fetched from the site over MQTT."""

from __future__ import annotations

from typing import Any

import pytest
from centralsite import Central, central, edge  # noqa: F401 - fixtures
from conftest import Daemon, sample
from playwright.async_api import Browser, expect
from test_browser import browser, sign_in, watch_errors  # noqa: F401 - the fixture is used by name

from vmond.store.models import Media

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.usefixtures("quick_mqtt")]

LOADED = "(selector) => { const all = [...document.querySelectorAll(selector)];" \
         " return all.length > 0 && all.every((img) => img.complete && img.naturalWidth > 0); }"


@pytest.fixture
def edge_options() -> dict[str, Any]:
    # No clip: the wall's card shows the first thumbnail (with a clip it would be the clip's poster).
    return {"mqtt": {"publish_media": "thumbnails"}, "video": {"enabled": False}}


async def test_the_wall_and_the_event_page_show_the_sites_pictures(
        edge: Daemon, central: Central, browser: Browser) -> None:  # noqa: F811
    page = await (await browser.new_context()).new_page()
    errors = watch_errors(page)
    await sign_in(page, central, "admin")  # type: ignore[arg-type]  # it has the url sign_in needs

    await edge.send(sample("hikvision-ipc-intrusion.eml"))
    card = page.locator("[data-event-id]")
    await expect(card).to_have_count(1, timeout=15000)
    await page.wait_for_function(LOADED, arg="[data-event-id] img", timeout=15000)
    event_id = await card.get_attribute("data-event-id")

    await page.goto(f"{central.url}/events/{event_id}")
    await expect(page.locator(".pictures img")).to_have_count(3)
    await page.wait_for_function(LOADED, arg=".pictures img", timeout=20000)
    await expect(page.locator(".picture-missing")).to_have_count(0)
    assert errors == []


async def test_a_picture_not_sent_yet_says_so_and_shows_once_it_comes(edge: Daemon, central: Central,  # noqa: F811
                                                      browser: Browser) -> None:  # noqa: F811
    await edge.send(sample("hikvision-ipc-intrusion.eml"))
    await edge.wait_idle()
    media = await edge.services.db.read(lambda: [(m.id, m.path) for m in Media.select().order_by(Media.position)])
    files = {path: edge.services.media.resolve(path).read_bytes() for _, path in media}
    for path in files:
        edge.services.media.resolve(path).unlink()  # gone from the edge's disk: nothing comes
    assert len(files) == 3
    page = await (await browser.new_context()).new_page()
    await sign_in(page, central, "admin")  # type: ignore[arg-type]
    card = page.locator("[data-event-id]")
    await expect(card).to_have_count(1, timeout=15000)
    await page.goto(f"{central.url}/events/{await card.get_attribute('data-event-id')}")
    missing = page.locator(".picture-missing")
    await expect(missing).to_have_count(3, timeout=25000)
    await expect(missing.first).to_have_text("Picture not available yet")
    await expect(page.locator(".pictures img").first).to_be_hidden()
    # The site can send them again (its disk back), and someone else opens the first one: the page, told over
    # /ws that the event changed, loads its pictures again.
    for path, data in files.items():
        edge.services.media.write_sync(path, data)
    first = await page.locator(".pictures img").first.get_attribute("src")
    assert first is not None
    status, _, _ = await central.fetch(first.split("?")[0])
    assert status == 200
    await expect(missing).to_have_count(0, timeout=30000)
    await page.wait_for_function(LOADED, arg=".pictures img", timeout=30000)
