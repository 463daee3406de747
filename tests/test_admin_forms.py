"""The administration forms as a browser receives them: the attributes of their inputs, parsed from the markup."""

from __future__ import annotations

from html.parser import HTMLParser

import aiohttp
from conftest import Daemon
from test_web import browser_session, log_in


class Inputs(HTMLParser):
    """Every ``<input>`` and ``<textarea>`` of a page with its attributes as the browser's parser sees them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.fields: list[dict[str, str | None]] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("input", "textarea"):
            self.fields.append(dict(attrs))

    def named(self, name: str) -> dict[str, str | None]:
        (found,) = [f for f in self.fields if f.get("name") == name]
        return found


async def page_inputs(http: aiohttp.ClientSession, url: str) -> Inputs:
    async with http.get(url) as response:
        assert response.status == 200, url
        return Inputs(await response.text())


async def dashboard_camera(daemon: Daemon, token: str) -> int:
    _, account = await daemon.api("POST", "/api/accounts", token, json={"name": "Forms Ltd"})
    status, camera = await daemon.api("POST", "/api/cameras", token, json={"account_id": account["id"],
                                                                            "name": "Porch"})
    assert status == 201, camera
    return camera["id"]


async def test_form_attributes_are_attributes_of_the_inputs(daemon: Daemon) -> None:
    await daemon.add_user("root", "admin")
    camera_id = await dashboard_camera(daemon, await daemon.token("root"))
    async with browser_session() as http:
        await log_in(daemon, http, "root")
        users = await page_inputs(http, f"{daemon.url}/users")
        assert users.named("username")["autocomplete"] == "off"
        assert users.named("password")["autocomplete"] == "new-password"
        assert users.named("password")["minlength"] == "8"
        assert "required" in users.named("password")
        user = await page_inputs(http, f"{daemon.url}/users/1")
        assert user.named("password")["autocomplete"] == "new-password"
        assert user.named("password")["minlength"] == "8"
        camera = await page_inputs(http, f"{daemon.url}/cameras/{camera_id}")
        assert camera.named("rtsp_url")["autocomplete"] == "off"
        assert camera.named("rtsp_url")["placeholder"] == "rtsp://user:password@camera/stream"
        assert camera.named("smtp_password")["autocomplete"] == "new-password"
        assert camera.named("smtp_password")["minlength"] == "8"
        for page in (users, user, camera):
            for field in page.fields:  # nothing escaped into the tag as a stray attribute name
                assert all(name.isascii() and name.replace("-", "").isalpha() for name in field), field


async def post_form(http: aiohttp.ClientSession, daemon: Daemon, path: str, form: dict[str, str]
                    ) -> tuple[int, str, str]:
    """Post like the browser does (following the redirect); returns the status, the final path and the page."""
    async with http.post(daemon.url + path, data=form, headers={"Origin": daemon.url}) as response:
        return response.status, response.url.path, await response.text()


def facts(html: str) -> dict[str, str]:
    """The camera page's facts (``<dt>`` → text of its ``<dd>``)."""
    import re

    pairs = re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", html, re.S)
    return {dt: re.sub(r"<[^>]+>", "", dd).strip() for dt, dd in pairs}


async def test_camera_address_chosen_and_changed_in_the_dashboard(daemon: Daemon) -> None:
    await daemon.add_user("boss", "supervisor")
    _, account = await daemon.api("POST", "/api/accounts", await daemon.token("boss"), json={"name": "Forms Ltd"})
    async with browser_session() as http:
        csrf = await log_in(daemon, http, "boss")
        new = {"csrf_token": csrf, "name": "Porch", "account_id": str(account["id"])}
        status, _, page = await post_form(http, daemon, "/cameras", {**new, "smtp_address": "porch cam"})
        assert status == 400 and "not a valid camera address" in page
        assert Inputs(page).named("smtp_address")["value"] == "porch cam"  # what was typed survives the error
        status, path, page = await post_form(http, daemon, "/cameras", {**new, "smtp_address": "Porch.Cam"})
        assert status == 200 and path.startswith("/cameras/")
        shown = facts(page)
        assert shown["Mail address"] == "porch.cam@monitor.local" and shown["SMTP password"] == "none"
        assert Inputs(page).named("smtp_address")["value"] == "porch.cam"
        status, _, page = await post_form(http, daemon, path, {**new, "smtp_address": "camera-front"})
        assert status == 400 and "is the address of the camera &#39;Front Door&#39;" in page
        assert Inputs(page).named("smtp_address")["value"] == "camera-front"
        status, _, page = await post_form(http, daemon, path, {**new, "smtp_address": "porch-2",
                                                               "smtp_password": "porch-secret"})
        assert status == 200 and facts(page)["Mail address"] == "porch-2@monitor.local"
        assert facts(page)["SMTP password"] == "set" and "porch-secret" not in page
        async with http.get(f"{daemon.url}/cameras/1") as response:  # declared in the file, without a password
            assert facts(await response.text())["SMTP password"] == "none"


async def test_contact_rows_without_javascript(daemon: Daemon) -> None:
    await daemon.add_user("boss", "supervisor")
    async with browser_session() as http:
        csrf = await log_in(daemon, http, "boss")
        form = {"csrf_token": csrf, "name": "Corner Shop", "contacts-0-priority": "1", "contacts-0-name": "Ann",
                "contacts-0-phone": "+1 555 0100", "contacts-1-priority": "2", "contacts-1-name": ""}
        # "Add a contact" posts the form: it comes back as typed, with one more empty row, and nothing is saved.
        status, path, page = await post_form(http, daemon, "/accounts/new", {**form, "add_contact": "1"})
        assert status == 200 and path == "/accounts/new"
        rows = [f for f in Inputs(page).fields if str(f.get("name", "")).startswith("contacts-")
                and "__i__" not in str(f["name"])]
        names = {str(f["name"]): f for f in rows}
        assert names["contacts-0-name"]["value"] == "Ann" and names["contacts-0-phone"]["value"] == "+1 555 0100"
        assert [names[f"contacts-{n}-name"]["value"] for n in (1, 2)] == ["", ""] and "contacts-3-name" not in names
        assert "autofocus" in names["contacts-1-name"]
        assert Inputs(page).named("name")["value"] == "Corner Shop"
        _, listed = await daemon.api("GET", "/api/accounts", await daemon.token("boss"))
        assert "Corner Shop" not in [a["name"] for a in listed["accounts"]]
        # A problem is shown at its field; the saved contact keeps its phone number whole.
        status, _, page = await post_form(http, daemon, "/accounts/new", {**form, "contacts-0-phone": "+1 555"
                                                                          " 0100 x12"})
        assert status == 400 and Inputs(page).named("contacts-0-phone")["aria-invalid"] == "true"
        assert 'id="contacts-0-phone-error"' in page and "is not a phone number" in page
        status, path, page = await post_form(http, daemon, "/accounts/new", form)
        assert status == 200 and path != "/accounts/new"
        assert Inputs(page).named("contacts-0-phone")["value"] == "+1 555 0100"
