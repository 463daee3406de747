"""Camera silence: a silent camera raises one camera_silent event, counted from its stored last mail (or from when
supervision began), and its next mail closes it in the mail's own transaction; an alarm raised from it stays open.
The store tests give the time explicitly (a fixed clock, never slept); then the running daemon over SMTP, HTTP and a
restart, the camera API and page, users limited to accounts, and the wall in Chromium."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD, Daemon, sample
from playwright.async_api import Browser, expect
from test_admin_forms import Inputs, facts, post_form
from test_browser import browser, sign_in, watch_errors  # noqa: F401 - the fixture is used by name
from test_mqtt_schema import check_message
from test_web import browser_session, log_in

from vmond.config import Config, ConfigError, parse_config_text
from vmond.daemon import running
from vmond.store import outbox
from vmond.store.alarms import alarm_detail, raise_alarm
from vmond.store.arming import snooze
from vmond.store.cameras import list_cameras
from vmond.store.changes import Change
from vmond.store.db import Database
from vmond.store.events import IngestRecord, get_event, list_queue, record_mail
from vmond.store.messages import Topics
from vmond.store.supervision import check_silence, set_condition, silence_due, silence_states
from vmond.store.sync import sync_accounts

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
DOMAIN = "monitor.local"
TOPICS = Topics("vmond", "test-site")


def mail(key: str, at: datetime, local: str = "camera-front", is_test: bool = False) -> IngestRecord:
    return IngestRecord(ingest_key=key, local_part=local, received_at=at, event_time=at, event_type="Motion",
                        subject="Motion", is_test=is_test)


def cameras(front: Any = None, back: Any = None) -> list[dict[str, Any]]:
    front_camera: dict[str, Any] = {"name": "Front Door", "smtp_address": "camera-front"}
    back_camera: dict[str, Any] = {"name": "Back Yard", "smtp_address": "camera-back"}
    if front is not None:
        front_camera["max_silence"] = front
    if back is not None:
        back_camera["max_silence"] = back
    return [{"name": "Test Customer", "cameras": [front_camera, back_camera]}]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def check(db: Database, seconds: float, default: float | None = None,
                change: Change | None = None) -> list[dict[str, Any]]:
    return await db.write(check_silence, DOMAIN, default, None, change, at(seconds))


async def test_silence_is_raised_once_and_the_next_mail_closes_it(tmp_path: Path,
                                                                  make_config: Callable[..., Config]) -> None:
    config = make_config(accounts=cameras(front="60s"))
    async with Database(tmp_path / "vmond.db") as db:
        await db.write(sync_accounts, config.accounts)
        assert await check(db, 0) == []  # supervision begins: a camera that never mailed is counted from now
        assert await db.read(silence_due, None, at(0)) == (False, at(60))
        assert await check(db, 59) == []
        change = Change(TOPICS)
        [raised] = await check(db, 60, change=change)
        assert (raised["kind"], raised["priority"], raised["status"]) == ("camera_silent", 2, "active")
        assert raised["camera"]["name"] == "Front Door" and raised["account"]["name"] == "Test Customer"
        assert "never mailed" in raised["subject"]
        assert [(a.type, a.data["id"]) for a in change.announcements] == [("event.created", raised["id"])]
        [row] = await db.read(outbox.pending, 0, 10)
        message = json.loads(row["payload"])
        assert (message["type"], message["event"]["kind"]) == ("new", "camera_silent")
        check_message(row["topic"], message)  # as the MQTT schema describes an events message
        assert [e["id"] for e in await db.read(list_queue, DOMAIN)] == [raised["id"]]  # on the wall
        assert await check(db, 600) == []  # one open silence event per camera, however long it lasts

        # The camera mails: the same transaction records the mail and closes the silence.
        change = Change(TOPICS)
        result = await db.write(record_mail, DOMAIN, mail("m1", at(700)), 0.0, change)
        closed = await db.read(get_event, DOMAIN, raised["id"])
        assert closed["status"] == "dismissed" and "cleared" in closed["flags"]
        assert [(a.type, a.data["id"]) for a in change.announcements] == [
            ("event.dismissed", raised["id"]), ("event.created", result.event["id"])]
        assert change.announcements[0].data["by"] is None  # dismissed by the system, not a guard
        assert [e["id"] for e in await db.read(list_queue, DOMAIN)] == [result.event["id"]]
        rows = await db.read(outbox.pending, 0, 10)
        update = json.loads(rows[1]["payload"])
        assert (update["type"], update["event"]["id"], update["event"]["status"]) == ("update", raised["id"],
                                                                                  "dismissed")
        check_message(rows[1]["topic"], update)

        # Counted again from that mail, not from supervision's start.
        assert await check(db, 759) == []
        [again] = await check(db, 760)
        assert again["id"] != raised["id"] and "its last mail came at 2026-03-01 12:11:40 UTC" in again["subject"]


async def test_a_test_mail_also_ends_a_silence(tmp_path: Path, make_config: Callable[..., Config]) -> None:
    config = make_config(accounts=cameras(front="30s"))
    async with Database(tmp_path / "vmond.db") as db:
        await db.write(sync_accounts, config.accounts)
        await db.write(record_mail, DOMAIN, mail("m1", at(0)), 0.0)
        [raised] = await check(db, 30)  # counted from the stored last mail
        await db.write(record_mail, DOMAIN, mail("t1", at(40), is_test=True), 0.0)
        assert (await db.read(get_event, DOMAIN, raised["id"]))["status"] == "dismissed"
        # Silent again, told in the site's time (site.timezone), as the clocks on site show it.
        [again] = await db.write(check_silence, DOMAIN, None, None, None, at(70), zone="Europe/Berlin")
        assert again["subject"].endswith("its last mail came at 2026-03-01 13:00:40 CET")


async def test_a_snoozed_camera_falls_silent_off_the_wall(tmp_path: Path, make_config: Callable[..., Config]) -> None:
    # Snoozed means put aside: its silence is flagged like its mails would be, kept off the queue (and so told to
    # nobody), and still stored and sent over MQTT with the flag.
    config = make_config(accounts=cameras(front="60s", back="60s"))
    async with Database(tmp_path / "vmond.db") as db:
        await db.write(sync_accounts, config.accounts)
        ids = {c["name"]: c["id"] for c in await db.read(list_cameras, DOMAIN)}
        await db.write(snooze, DOMAIN, ids["Front Door"], at(3600), "wind in the trees", None)
        await check(db, 0)
        raised = {e["camera"]["name"]: e for e in await check(db, 60)}
        assert raised["Front Door"]["flags"] == ["snoozed"] and raised["Back Yard"]["flags"] == []
        assert [e["id"] for e in await db.read(list_queue, DOMAIN)] == [raised["Back Yard"]["id"]]
        assert await check(db, 3599) == []  # still snoozed: held off the wall, not raised again
        # The snooze is over and the camera still silent: the held event closes and a new one comes onto the wall.
        assert await db.read(silence_due, None, at(3601)) == (True, at(3661))
        change = Change(TOPICS)
        closed, renewed = await check(db, 3601, change=change)
        assert closed["id"] == raised["Front Door"]["id"] and closed["status"] == "dismissed"
        assert renewed["camera"]["name"] == "Front Door" and renewed["flags"] == []
        assert [e["id"] for e in await db.read(list_queue, DOMAIN)] == [raised["Back Yard"]["id"], renewed["id"]]
        assert await check(db, 4000) == []


async def test_an_alarm_raised_from_a_silence_stays_open_and_its_trail_says_why_it_ended(
        tmp_path: Path, make_config: Callable[..., Config]) -> None:
    config = make_config(accounts=cameras(front="10s"))
    async with Database(tmp_path / "vmond.db") as db:
        await db.write(sync_accounts, config.accounts)
        await check(db, 0)
        [raised] = await check(db, 10)
        alarm, _, _ = await db.write(raise_alarm, DOMAIN, raised["id"], None)
        await db.write(record_mail, DOMAIN, mail("m1", at(20)), 0.0)
        detail = await db.read(alarm_detail, DOMAIN, alarm["id"])
        assert detail["state"] == "open" and detail["event"]["status"] == "alarmed"
        assert "cleared" in detail["event"]["flags"]
        texts = [entry["text"] for entry in detail["audit"]]
        assert texts[0].startswith("vmond raised it: No mail from Front Door for 10s")
        assert "vmond closed it: the camera mailed again" in texts


async def test_the_default_limit_and_a_camera_turned_off(tmp_path: Path, make_config: Callable[..., Config]) -> None:
    config = make_config(accounts=cameras(back="off"), supervision={"max_silence": "1m"})
    async with Database(tmp_path / "vmond.db") as db:
        await db.write(sync_accounts, config.accounts)
        await check(db, 0, default=60)
        raised = await check(db, 60, default=60)
        assert [e["camera"]["name"] for e in raised] == ["Front Door"]
        states = await db.read(silence_states, [1, 2], 60.0, at(60))
        assert states[1] == {"max_silence": None, "limit": 60.0, "counted_from": at(0).isoformat(),
                             "silent_event_id": raised[0]["id"]}
        assert states[2] == {"max_silence": "off", "limit": None, "counted_from": None, "silent_event_id": None}

        # The default turned off (a restart with another configuration): the open silence closes, and a later
        # default counts from when supervision began again.
        [closed] = await check(db, 70, default=None)
        assert closed["status"] == "dismissed"
        assert await db.read(silence_due, None, at(80)) == (False, None)
        assert await check(db, 100, default=60) == []
        assert await db.read(silence_due, 60, at(100)) == (False, at(160))


async def test_a_running_daemon_raises_a_silence_keeps_it_over_a_restart_and_a_mail_closes_it(
        make_config: Callable[..., Config]) -> None:
    """Over real SMTP and HTTP: a 1-second max_silence; the open silence survives a restart without a second
    event, the camera's mail closes it, and the silence after that mail is counted from it."""
    config = make_config(accounts=cameras(front="1s", back="off"))

    async def silent_events(daemon: Daemon, token: str) -> list[dict[str, Any]]:
        status, body = await daemon.api("GET", "/api/events?status=all", token)
        assert status == 200, body
        return sorted((e for e in body["events"] if e["kind"] == "camera_silent"), key=lambda e: e["id"])

    async def until(daemon: Daemon, token: str, condition: Callable[[list[dict[str, Any]]], bool], what: str
                    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for _ in range(250):
            found = await silent_events(daemon, token)
            if condition(found):
                return found
            await asyncio.sleep(0.02)
        raise AssertionError(f"not within 5 s: {what}; camera_silent events: {found}")

    async with running(config) as services:
        daemon = Daemon(services)
        await daemon.add_user()
        token = await daemon.token()
        [first] = await until(daemon, token, lambda found: len(found) == 1, "the front camera falls silent")
        assert first["camera"]["name"] == "Front Door" and first["status"] == "active"
        status, camera = await daemon.api("GET", f"/api/cameras/{first['camera']['id']}", token)
        assert status == 200 and camera["supervision"]["silent_event_id"] == first["id"]
        assert camera["supervision"]["limit"] == 1.0
        status, back = await daemon.api("GET", "/api/cameras", token)
        assert [c["supervision"]["max_silence"] for c in back["cameras"]] == ["off", 1.0]  # Back Yard, Front Door

    async with running(config) as services:  # restarted: the same silence, still open
        daemon = Daemon(services)
        token = await daemon.token()
        assert [(e["id"], e["status"]) for e in await silent_events(daemon, token)] == [(first["id"], "active")]
        replies = await daemon.send(sample("hikvision-ipc-intrusion.eml"))
        assert replies["data"][0] == 250
        await daemon.wait_idle()
        found = await until(daemon, token, lambda found: len(found) == 2, "silent again, after its mail")
        closed, again = found
        assert closed["id"] == first["id"] and closed["status"] == "dismissed" and "cleared" in closed["flags"]
        assert again["status"] == "active"  # one per silence: the restart raised no second event for the first
        # Its own trail says why it came and why it went, in the API and on the event's page.
        status, detail = await daemon.api("GET", f"/api/events/{closed['id']}", token)
        assert status == 200 and [entry["action"] for entry in detail["audit"]] == [
            "condition.raised", "condition.cleared"]
        assert detail["audit"][1]["text"] == "vmond closed it: the camera mailed again"
        assert detail["audit"][1]["who"] is None
        status, page = await daemon.api("GET", f"/events/{closed['id']}", token)
        assert status == 200 and "Audit trail" in page and "vmond closed it: the camera mailed again" in page


def test_a_silence_limit_lies_between_a_second_and_a_year() -> None:
    text = """supervision:
  max_silence: 0.5s
accounts:
  - name: Shop
    cameras:
      - {name: Door, smtp_address: door, max_silence: 99999999d}
      - {name: Yard, smtp_address: yard, max_silence: "off"}
"""
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, "shop.yaml")
    problems = [str(p) for p in caught.value.problems]
    assert len(problems) == 2, problems
    assert problems[0].startswith("shop.yaml:2: supervision.max_silence: must be at least 1s"), problems
    assert problems[1].startswith("shop.yaml:6: accounts[0].cameras[0].max_silence: must be at most 366d"), problems


async def test_a_dashboard_camera_takes_its_max_silence_over_the_api_and_shows_it(daemon: Daemon) -> None:
    await daemon.add_user()
    token = await daemon.token()
    status, created = await daemon.api("POST", "/api/cameras", token,
                                       json={"account_id": 1, "name": "Gate", "max_silence": "12h"})
    assert status == 201, created
    assert created["supervision"]["max_silence"] == 43200.0 and created["supervision"]["limit"] == 43200.0
    path = f"/api/cameras/{created['id']}"
    for wrong in ("twelve hours", "99999999d", 1e300, "0.5s", -3):
        status, body = await daemon.api("PATCH", path, token, json={"max_silence": wrong})
        assert status == 400 and "max_silence" in body["fields"], (wrong, status, body)
    # The camera page's form sends max_silence with every other field: a new address is kept too.
    status, moved = await daemon.api("PATCH", path, token, json={"max_silence": "1d", "smtp_address": "gate-2"})
    assert status == 200 and moved["smtp_address"].startswith("gate-2@"), moved
    assert moved["supervision"]["max_silence"] == 86400.0
    status, changed = await daemon.api("PATCH", path, token, json={"max_silence": "off"})
    assert status == 200 and changed["supervision"] == {"max_silence": "off", "limit": None, "counted_from": None,
                                                        "silent_event_id": None}
    status, changed = await daemon.api("PATCH", path, token, json={"max_silence": 90})
    assert status == 200 and changed["supervision"]["limit"] == 90.0


async def test_appliance_events_are_for_users_with_every_account(make_config: Callable[..., Config]) -> None:
    """A user limited to accounts sees the silence of those accounts' cameras; the appliance's own events belong
    to no account and are shown to users with every account only (like the SMTP door's diagnostics)."""
    config = make_config(accounts=cameras(front="1s", back="off"))
    async with running(config) as services:
        daemon = Daemon(services)
        await daemon.add_user()
        admin = await daemon.token()
        status, body = await daemon.api("POST", "/api/users", admin, json={
            "username": "limited", "password": PASSWORD, "role": "guard", "accounts": [1]})
        assert status == 201, body
        limited = await daemon.token("limited")
        disk = await services.changes.record(set_condition, DOMAIN, "disk_low", True, "Disk space low", "10MB free")
        assert disk is not None

        async def kinds(token: str) -> list[str]:
            status, body = await daemon.api("GET", "/api/events?status=active&order=queue", token)
            assert status == 200, body
            return [event["kind"] for event in body["events"]]

        for _ in range(250):
            if "camera_silent" in await kinds(admin):
                break
            await asyncio.sleep(0.02)
        assert await kinds(admin) == ["disk_low", "camera_silent"]  # priority 1, then 2
        assert await kinds(limited) == ["camera_silent"]
        status, _ = await daemon.api("GET", f"/api/events/{disk['id']}", limited)
        assert status == 404


@pytest.mark.browser
@pytest.mark.slow
async def test_the_wall_shows_silence_and_appliance_cards_and_drops_them_when_they_close(
        make_config: Callable[..., Config], browser: Browser) -> None:  # noqa: F811
    """One page session: a card raised while the page is open (live) and one rendered on the server; the
    appliance's card names no camera but the appliance and says why; a closed condition leaves the wall."""
    config = make_config(accounts=cameras(front="1s", back="off"))
    async with running(config) as services:
        daemon = Daemon(services)
        await services.changes.record(set_condition, DOMAIN, "spool_stuck", True, "Spool not draining",
                                      "a received mail has waited 5m to become an event")
        await daemon.add_user("guard1", "guard")
        page = await browser.new_page()
        errors = watch_errors(page)
        await sign_in(page, daemon, "guard1")
        appliance = page.locator('#wall > [data-kind="spool_stuck"]')
        await expect(appliance).to_have_attribute("data-priority", "1")
        await expect(appliance.locator(".event-where")).to_have_text("This appliance")
        await expect(appliance.locator(".event-subject")).to_have_text("a received mail has waited 5m to become "
                                                                       "an event")
        silent = page.locator('#wall > [data-kind="camera_silent"]')
        await expect(silent.locator(".event-where")).to_contain_text("Front Door")
        await expect(silent.locator(".event-subject")).to_contain_text("No mail from Front Door for 1s")
        await services.changes.record(set_condition, DOMAIN, "disk_low", True, "Disk space low", "10MB free")
        disk = page.locator('#wall > [data-kind="disk_low"]')  # live, built by the page's script
        await expect(disk.locator(".event-where")).to_have_text("This appliance")
        await expect(disk.locator(".event-subject")).to_have_text("10MB free")
        await services.changes.record(set_condition, DOMAIN, "spool_stuck", False, "Spool not draining",
                                      "the spool drains again")
        await expect(appliance).to_have_count(0)
        assert errors == []
        await page.close()


async def test_the_camera_page_shows_and_sets_a_dashboard_cameras_max_silence(daemon: Daemon) -> None:
    await daemon.add_user("boss", "supervisor")
    async with browser_session() as http:
        csrf = await log_in(daemon, http, "boss")
        new = {"csrf_token": csrf, "name": "Gate", "account_id": "1"}
        status, path, page = await post_form(http, daemon, "/cameras", {**new, "max_silence": "12h"})
        assert status == 200 and path.startswith("/cameras/"), page
        assert facts(page)["Silence supervision"].startswith("raises an event after 12h without a mail")
        assert Inputs(page).named("max_silence")["value"] == "12h"
        status, _, page = await post_form(http, daemon, path, {**new, "max_silence": "soon"})
        assert status == 400 and "invalid duration" in page
        status, _, page = await post_form(http, daemon, path, {**new, "max_silence": "off"})
        assert status == 200 and facts(page)["Silence supervision"] == "off for this camera"
        assert Inputs(page).named("max_silence")["value"] == "off"
        status, _, page = await post_form(http, daemon, path, {**new, "max_silence": ""})
        assert status == 200 and facts(page)["Silence supervision"] == "off"  # no supervision.max_silence here
        async with http.get(f"{daemon.url}/cameras/1") as response:  # declared in the file: shown, not a form
            page = await response.text()
        assert facts(page)["Silence supervision"] == "off"
        assert not [f for f in Inputs(page).fields if f.get("name") == "max_silence"]
