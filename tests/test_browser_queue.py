"""The wall as a queue in Debian's Chromium: mixed priorities and ages in queue order, the age on each card,
escalation (seen and heard) past a short ``events.escalate_after``, and keyboard focus that follows the queue."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from conftest import Daemon, distinct, sample
from mailmaker import dvr_mail
from playwright.async_api import Browser, expect
from test_browser import browser, sign_in, watch_errors  # noqa: F401 - the fixture is used by name

from vmond.config import Config
from vmond.daemon import running
from vmond.store.models import AlarmEvent
from vmond.util.clock import utcnow

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ESCALATE_AFTER = 6  # seconds: long enough to see a fresh card before it escalates, short enough to wait for

# Counts the tones the page plays (the frequency of each oscillator started), without needing a sound card.
COUNT_TONES = """
window.__tones = [];
const start = OscillatorNode.prototype.start;
OscillatorNode.prototype.start = function (...args) {
  window.__tones.push(this.frequency.value);
  return start.apply(this, args);
};
"""


@pytest.fixture
async def quick_escalation(make_config: Callable[..., Config]) -> AsyncIterator[Daemon]:
    config = make_config(events={"coalesce_window": "0s", "escalate_after": f"{ESCALATE_AFTER}s"})
    async with running(config) as services:
        yield Daemon(services)


async def age(daemon: Daemon, event_type: str, minutes: int) -> None:
    """Make the event look as if it had been received *minutes* ago (its camera's clock stays as it was)."""
    def update() -> int:
        return (AlarmEvent.update(received_at=utcnow() - timedelta(minutes=minutes))
                .where(AlarmEvent.event_type == event_type).execute())
    assert await daemon.services.db.write(update) == 1


async def test_the_wall_is_a_queue(quick_escalation: Daemon, browser: Browser) -> None:  # noqa: F811
    daemon = quick_escalation
    # Waiting on the wall before the guard comes: a motion for 10 minutes (priority 3), an intrusion for 5 and a
    # person for 2 (both priority 1).
    for n, mail in enumerate((dvr_mail("CAM 1 Drive", "A1", 1), sample("hikvision-ipc-intrusion.eml"),
                              sample("reolink-person.eml"))):
        assert (await daemon.send(distinct(mail, n)))["data"][0] == 250
    await daemon.wait_idle()
    await age(daemon, "motion alarm", 10)
    await age(daemon, "Intrusion Detection", 5)
    await age(daemon, "Person Detected", 2)

    await daemon.add_user("guard1", "guard")
    context = await browser.new_context()
    await context.add_init_script(COUNT_TONES)
    page = await context.new_page()
    errors = watch_errors(page)
    await sign_in(page, daemon, "guard1")
    cards = page.locator("#wall > [data-event-id]")

    # Priority first, then the longest waiting; the first card has the keys.
    await expect(cards).to_have_count(3)
    assert [await c.get_attribute("data-kind") for c in await cards.all()] == ["intrusion", "person", "motion"]
    assert [await c.get_attribute("data-priority") for c in await cards.all()] == ["1", "1", "3"]
    await expect(cards.first).to_be_focused()
    await expect(cards.first.locator(".event-age")).to_have_text(re.compile(r"^5m \d+s ago$"))
    await expect(cards.nth(2).locator(".event-age")).to_have_text(re.compile(r"^10m \d+s ago$"))
    for card in await cards.all():  # all waited longer than events.escalate_after
        await expect(card).to_have_attribute("data-escalated", "")
    assert await cards.first.evaluate("card => getComputedStyle(card).borderTopColor") == "rgb(255, 90, 90)"

    # Sound on; a fresh tamper (priority 1) joins the queue after the priority-1 events that waited longer, ahead
    # of the motion; it escalates, and is heard, once it has waited events.escalate_after.
    await page.click("#sound")
    await page.evaluate("window.__tones = []")
    # An escalated card dismissed, kept out while the escalation check runs, then taken back with Undo: back in its
    # place, escalated, and not heard again (only the tamper's pips below are).
    intrusion = await cards.first.get_attribute("data-event-id")
    await cards.first.locator('[data-action="dismiss"]').click()
    await expect(cards).to_have_count(2)
    shown_age = cards.first.locator(".event-age")
    for _ in range(2):  # the ages count on the same second as the escalation check: two changes, a check between
        await expect(shown_age).not_to_have_text(await shown_age.text_content() or "")
    await page.click("[data-action=undo]")
    await expect(cards).to_have_count(3)
    await expect(cards.first).to_have_attribute("data-event-id", intrusion or "")
    await expect(cards.first).to_have_attribute("data-escalated", "")
    await expect(cards.first).to_be_focused()  # Undo puts the focus on the card it brought back
    await page.locator("#sound").focus()
    assert (await daemon.send(sample("amcrest-tamper.eml")))["data"][0] == 250
    await expect(cards).to_have_count(4, timeout=5000)
    assert [await c.get_attribute("data-kind") for c in await cards.all()] == [
        "intrusion", "person", "tamper", "motion"]
    fresh = cards.nth(2)
    assert await fresh.get_attribute("data-escalated") is None
    await expect(fresh.locator(".event-age")).to_have_text(re.compile(r"^\ds ago$"))
    await expect(fresh).to_have_attribute("data-escalated", "", timeout=(ESCALATE_AFTER + 5) * 1000)
    await page.wait_for_function("window.__tones.includes(1320)", timeout=3000)  # the escalation's pips
    tones = await page.evaluate("window.__tones")
    assert tones.count(1320) == 3, tones  # once for the card that escalated, not for the ones already escalated

    # Back from the sound button to the queue: an arrow key takes the first card. D dismisses it and the focus goes
    # to the card now first; a mouse dismiss of that one leaves the focus on the next first card too.
    await page.keyboard.press("ArrowRight")
    await expect(cards.first).to_be_focused()
    await page.keyboard.press("d")
    await expect(cards).to_have_count(3)
    await expect(cards.first).to_have_attribute("data-kind", "person")
    await expect(cards.first).to_be_focused()
    await cards.first.locator('[data-action="dismiss"]').click()
    await expect(cards).to_have_count(2)
    await expect(cards.first).to_have_attribute("data-kind", "tamper")
    await expect(cards.first).to_be_focused()

    assert errors == []
