"""The account editor in Debian's Chromium: as many contact rows as needed, errors at their field, whole numbers."""

from __future__ import annotations

import pytest
from conftest import Daemon
from playwright.async_api import Browser, Page, expect
from test_browser import browser, sign_in, watch_errors  # noqa: F401 - the fixture is used by name

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LONG_PHONE = "+44 (0)20 7946 0958"


async def phones_fit(page: Page) -> list[bool]:
    """For each phone field: does it show its whole value (nothing scrolled out of sight)?"""
    return await page.locator("td.phone input").evaluate_all(
        "inputs => inputs.filter(i => i.value).map(i => i.scrollWidth <= i.clientWidth)")


async def test_contacts_added_checked_and_shown_whole(daemon: Daemon, browser: Browser) -> None:  # noqa: F811
    await daemon.add_user("boss", "supervisor")
    page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
    errors = watch_errors(page)
    await sign_in(page, daemon, "boss")
    await page.goto(f"{daemon.url}/accounts/new")
    await page.fill('input[name="name"]', "Bakery Smith")
    rows = page.locator(".contacts-editor tbody tr")
    await expect(rows).to_have_count(1)
    await page.fill('input[name="contacts-0-name"]', "Sam Smith")
    await page.fill('input[name="contacts-0-phone"]', LONG_PHONE)
    add = page.locator('[data-action="add-contact"]')
    await add.click()
    await add.click()
    await expect(rows).to_have_count(3)  # added in the page, nothing posted
    assert page.url.endswith("/accounts/new")
    await expect(page.locator('input[name="contacts-2-name"]')).to_be_focused()
    await expect(page.locator('input[name="contacts-2-priority"]')).to_have_value("3")
    await page.fill('input[name="contacts-1-name"]', "Bo Smith")
    await page.fill('input[name="contacts-1-email"]', "bo@example")
    await page.fill('input[name="contacts-2-name"]', "Cy Smith")
    await page.click('button[type="submit"].primary')

    # Each problem is shown at its own field, and what was typed is still there.
    email_error = page.locator("td.email.has-error small.error")
    await expect(email_error).to_have_text("'bo@example' is not an e-mail address: write it like jane@example.com")
    await expect(page.locator('input[name="contacts-1-email"]')).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("td.phone.has-error small.error")).to_have_text(
        "a contact needs a phone number or an e-mail address")
    await expect(page.locator('input[name="contacts-2-phone"]')).to_have_attribute("aria-invalid", "true")
    await expect(page.locator('input[name="contacts-0-phone"]')).to_have_value(LONG_PHONE)
    await page.fill('input[name="contacts-1-email"]', "bo@example.com")
    await page.fill('input[name="contacts-2-phone"]', "(555) 010-0100")
    await page.click('button[type="submit"].primary')
    await expect(page.locator("h1")).to_contain_text("Bakery Smith")
    await expect(page.locator('input[name="contacts-0-phone"]')).to_have_value(LONG_PHONE)
    await expect(page.locator('input[name="contacts-2-phone"]')).to_have_value("(555) 010-0100")

    # Whole phone numbers, on a desktop and on a phone.
    assert await phones_fit(page) == [True, True]
    await page.set_viewport_size({"width": 390, "height": 844})
    assert await phones_fit(page) == [True, True]

    # An existing account takes more contacts the same way.
    await page.set_viewport_size({"width": 1280, "height": 900})
    await expect(rows).to_have_count(4)  # three contacts and a spare row
    await add.click()
    await expect(page.locator('input[name="contacts-4-name"]')).to_be_focused()
    await page.fill('input[name="contacts-4-name"]', "Di Smith")
    await page.fill('input[name="contacts-4-phone"]', "555.010.0104")
    await page.click('button[type="submit"].primary')
    await expect(page.locator('input[name="contacts-3-name"]')).to_have_value("Di Smith")
    _, account = await daemon.api("GET", page.url.replace(daemon.url, "/api"), await daemon.token("boss"))
    assert [(c["name"], c["phone"], c["email"]) for c in account["contacts"]] == [
        ("Sam Smith", LONG_PHONE, None), ("Bo Smith", None, "bo@example.com"), ("Cy Smith", "(555) 010-0100", None),
        ("Di Smith", "555.010.0104", None)]
    assert [e for e in errors if "status of 400" not in e] == []  # the refused save answered 400, as it should
