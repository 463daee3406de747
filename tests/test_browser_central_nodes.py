"""Two central nodes on one PostgreSQL in Debian's Chromium (issue 19): the wall on node A shows at once what an
operator did on node B, and the same browser, moved to node B, is still signed in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from centralsite import Central, central_nodes, until_edge_listens  # noqa: F401 - fixtures
from mosquitto import Mosquitto
from playwright.async_api import Browser, expect
from test_browser import browser, sign_in, watch_errors  # noqa: F401 - the fixture is used by name
from test_central_commands import broker, edge_daemon, mirrored_event  # noqa: F401 - a broker that keeps sessions

from vmond.config import Config

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.usefixtures("quick_mqtt")]


@pytest.fixture
def nodes(tmp_path: Path, broker: Mosquitto, postgres_url: str) -> Iterator[list[Central]]:  # noqa: F811
    with central_nodes(tmp_path, broker.port, postgres_url) as nodes:
        yield nodes


async def test_the_wall_on_node_a_shows_what_an_operator_did_on_node_b(
        make_config: Callable[..., Config], broker: Mosquitto, nodes: list[Central],  # noqa: F811
        browser: Browser) -> None:  # noqa: F811
    a, b = nodes
    async with edge_daemon(make_config, broker.port) as edge:
        await until_edge_listens(broker.port)
        _, event_id = await mirrored_event(edge, a)
    context = await browser.new_context()
    page = await context.new_page()
    errors = watch_errors(page)
    await sign_in(page, a, "admin")  # type: ignore[arg-type] - it needs only the url
    card = page.locator(f'[data-event-id="{event_id}"]')
    await expect(card).to_be_visible()

    # The site is away: an operator on node B dismisses the event; node A's wall shows the command at once.
    status, sent = await b.call("POST", f"/api/events/{event_id}/dismiss")
    assert status == 202, sent
    await expect(card.locator(".event-command")).to_have_text("Dismiss: sent to Test Site, waiting", timeout=1500)

    # The same browser on node B (a load balancer moved it): still signed in, the same card.
    other = await context.new_page()
    errors += watch_errors(other)
    await other.goto(f"{b.url}/")
    assert other.url == f"{b.url}/"
    await expect(other.locator("#connection")).to_have_text("live")
    await expect(other.locator(f'[data-event-id="{event_id}"]')).to_be_visible()

    # The site is back and does it: gone from the wall on both nodes, whichever node mirrored the answer.
    async with edge_daemon(make_config, broker.port, again=True):
        await expect(card).to_have_count(0, timeout=20_000)
        await expect(other.locator(f'[data-event-id="{event_id}"]')).to_have_count(0, timeout=5_000)
    assert [e for e in errors if not e.startswith("Failed to load resource")] == [], errors
