"""Live view in Debian's Chromium against the test RTSP camera: the alarm page shows changing pictures, closing
the page ends the camera's session, failures read as text, and the picture at raising appears on its own."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable

import pytest
from conftest import sample
from helpers import wait_until
from playwright.async_api import Browser, Page, expect
from rtsp_server import RtspCamera
from test_browser import browser, sign_in  # noqa: F401 - fixtures used by name
from test_live import (  # noqa: F401 - fixtures used by name
    CAM_PASSWORD,
    WRONG_PASSWORD,
    LiveDaemon,
    camera,
    live_config,
    silent_port,
    start,
)

from vmond.config import Config

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PIXELS = """img => {
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(img, 0, 0);
  const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let hash = 0;
  for (let i = 0; i < data.length; i += 7) hash = (hash * 31 + data[i]) >>> 0;
  return [canvas.width, canvas.height, hash];
}"""


@pytest.fixture
async def live(live_config: Callable[..., Config]) -> AsyncIterator[LiveDaemon]:  # noqa: F811
    async with start(live_config(snapshot_on_alarm=True)) as daemon:
        yield daemon


def script_errors(page: Page) -> list[str]:
    """The page's script errors (a camera that fails is a failed picture load on these pages, not an error)."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


async def test_alarm_page_shows_live_pictures_and_closing_it_ends_the_stream(
        live: LiveDaemon, browser: Browser, camera: RtspCamera) -> None:  # noqa: F811
    hub = live.services.live
    assert hub is not None
    page = await (await browser.new_context()).new_page()
    errors = script_errors(page)
    await sign_in(page, live, "guard1")
    assert (await live.send(sample("hikvision-ipc-intrusion.eml"), to="front@monitor.local"))["data"][0] == 250
    card = page.locator("[data-event-id]")
    await expect(card).to_have_count(1, timeout=5000)
    await card.locator('[data-action="alarm"]').click()
    await page.wait_for_url(re.compile(r"/alarms/\d+$"))

    view = page.locator("[data-live-camera]")
    await expect(view).to_have_attribute("data-state", "live", timeout=10000)
    picture = view.locator("img.live-picture")
    await expect(view).to_have_attribute("data-frames", re.compile(r"^[2-9]|\d\d"), timeout=10000)
    first = await picture.evaluate(PIXELS)
    frames = int(await view.get_attribute("data-frames") or 0)
    await expect(view).to_have_attribute("data-frames", re.compile(rf"^(?!{frames}$)\d+$"), timeout=5000)
    second = await picture.evaluate(PIXELS)
    assert first[:2] == second[:2] == [640, 360]
    assert first[2] != second[2]  # the ball moved: the picture is live

    # The picture taken at raising arrives on its own, labelled.
    await expect(page.locator("#raised-snapshot figure")).to_contain_text("At the moment of raising", timeout=10000)
    assert CAM_PASSWORD not in await page.content()

    closed_before = camera.count("client-closed")
    assert hub.open_streams == 1
    await page.close()
    await wait_until(lambda: hub.open_streams == 0, timeout=8)
    assert camera.wait_for(lambda: camera.count("client-closed") > closed_before, 5)
    assert errors == []


async def test_failures_read_as_text_on_the_camera_page(live: LiveDaemon, browser: Browser) -> None:  # noqa: F811
    page = await (await browser.new_context()).new_page()
    errors = script_errors(page)
    await sign_in(page, live, "admin")
    await page.goto(f"{live.url}/cameras/{live.cameras['Wrong Password']}")
    view = page.locator("[data-live-camera]")
    await expect(view).to_have_attribute("data-state", "off")  # the camera page waits to be asked
    await view.locator('[data-action="live-toggle"]').click()
    await expect(view).to_have_attribute("data-state", "error", timeout=10000)
    await expect(view.locator(".live-status")).to_contain_text("authorization failed")
    await expect(view.locator('[data-action="live-toggle"]')).to_have_text("Try again")

    await page.goto(f"{live.url}/cameras/{live.cameras['Dead']}")
    view = page.locator("[data-live-camera]")
    await view.locator('[data-action="live-snapshot"]').click()
    await expect(view.locator(".live-snapshot")).to_contain_text("connection refused", timeout=10000)
    content = await page.content()
    assert CAM_PASSWORD not in content and WRONG_PASSWORD not in content
    assert errors == []


async def test_a_camera_without_a_stream_has_no_live_view(live: LiveDaemon, browser: Browser) -> None:  # noqa: F811
    page = await (await browser.new_context()).new_page()
    await sign_in(page, live, "admin")
    await page.goto(f"{live.url}/cameras/{live.cameras['No Url']}")
    await expect(page.locator(".facts")).to_contain_text("no RTSP URL")
    await expect(page.locator("[data-live-camera]")).to_have_count(0)
