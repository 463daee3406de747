"""Schedules and snooze (issue 17): the schedule's evaluation across daylight saving changes and holidays (fixed
times, no waiting), its configuration and errors, and over the running daemon: arm/disarm and snooze with their
ends, the ``unmonitored`` and ``snoozed`` flags, and such events kept off the wall's queue but not out of the API."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import Daemon, distinct, sample
from test_store import record
from test_web import browser_session, log_in

from vmond.config import Config, ConfigError, parse_config_text
from vmond.config.schedule import system_timezone
from vmond.daemon import running
from vmond.store import migrations
from vmond.store.accounts import list_accounts
from vmond.store.changes import Change
from vmond.store.db import open_sqlite
from vmond.store.events import list_queue, record_mail
from vmond.store.messages import Topics
from vmond.store.models import OutboxMessage
from vmond.store.monitoring import monitoring_dict
from vmond.store.sync import sync_accounts
from vmond.util.clock import utcnow
from vmond.util.schedule import DatedException, Override, Schedule, WeeklyWindow, Window, monitoring

BERLIN = ZoneInfo("Europe/Berlin")
WEEKENDS = frozenset({5, 6})


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def nights(days: frozenset[int] = frozenset(range(7))) -> Schedule:
    """Monitored from 22:00 to 06:00 the next morning."""
    return Schedule(weekly=(WeeklyWindow(days, Window(22 * 60, 6 * 60)),))


# --- the pure evaluation --------------------------------------------------------------------------------------


def test_without_a_schedule_an_account_is_monitored_around_the_clock() -> None:
    assert monitoring(utc("2026-06-01T12:00"), None, BERLIN) == (True, None)


def test_a_night_window_keeps_its_local_times_across_the_spring_change() -> None:
    # Sunday 29 March 2026, 02:00 CET -> 03:00 CEST: the night from Saturday is an hour shorter in UTC.
    schedule = nights()
    saturday_night = monitoring(utc("2026-03-28T21:30"), schedule, BERLIN)  # 22:30 CET
    assert saturday_night == (True, utc("2026-03-29T04:00"))  # 06:00 CEST
    assert monitoring(utc("2026-03-29T04:30"), schedule, BERLIN) == (False, utc("2026-03-29T20:00"))  # 22:00 CEST
    # A week earlier the same window ended at 05:00 UTC (06:00 CET).
    assert monitoring(utc("2026-03-22T04:30"), schedule, BERLIN) == (True, utc("2026-03-22T05:00"))


def test_a_night_window_keeps_its_local_times_across_the_autumn_change() -> None:
    # Sunday 25 October 2026, 03:00 CEST -> 02:00 CET: the night is an hour longer; 06:00 CET is 05:00 UTC.
    schedule = nights()
    assert monitoring(utc("2026-10-24T20:30"), schedule, BERLIN) == (True, utc("2026-10-25T05:00"))
    assert monitoring(utc("2026-10-25T04:30"), schedule, BERLIN) == (True, utc("2026-10-25T05:00"))
    assert monitoring(utc("2026-10-25T05:00"), schedule, BERLIN) == (False, utc("2026-10-25T21:00"))  # 22:00 CET


def test_a_time_the_clocks_skip_counts_an_hour_later() -> None:
    schedule = Schedule(weekly=(WeeklyWindow(frozenset({6}), Window(2 * 60 + 30, 4 * 60)),))  # Sun 02:30-04:00
    # 02:30 does not exist on 29 March 2026 in Berlin: the window opens at 03:30 CEST (01:30 UTC).
    assert monitoring(utc("2026-03-29T01:00"), schedule, BERLIN) == (False, utc("2026-03-29T01:30"))
    assert monitoring(utc("2026-03-29T01:45"), schedule, BERLIN) == (True, utc("2026-03-29T02:00"))


def test_a_holiday_replaces_the_weekly_windows_of_its_day() -> None:
    # Weekdays monitored at night only; Christmas (Friday 25 December 2026) all day, New Year's Eve not at all.
    schedule = Schedule(
        weekly=(WeeklyWindow(frozenset(range(5)), Window(18 * 60, 8 * 60)),),
        exceptions=(DatedException(date(2026, 12, 25), date(2026, 12, 25), (Window(0, 24 * 60),), "Christmas"),
                    DatedException(date(2026, 12, 31), date(2026, 12, 31), (), "shop open late")))
    # Thursday 24th, noon (CET = UTC+1): not monitored until 18:00; then through Christmas Day to its midnight.
    assert monitoring(utc("2026-12-24T11:00"), schedule, BERLIN) == (False, utc("2026-12-24T17:00"))
    assert monitoring(utc("2026-12-24T20:00"), schedule, BERLIN) == (True, utc("2026-12-25T23:00"))
    assert monitoring(utc("2026-12-25T13:00"), schedule, BERLIN).monitored  # a Friday noon, a holiday
    assert not monitoring(utc("2026-12-18T13:00"), schedule, BERLIN).monitored  # the Friday before: not
    # The window of Wednesday 30th still runs into the morning of the 31st; none opens on the 31st.
    assert monitoring(utc("2026-12-31T06:00"), schedule, BERLIN) == (True, utc("2026-12-31T07:00"))
    assert monitoring(utc("2026-12-31T19:00"), schedule, BERLIN) == (False, utc("2027-01-01T17:00"))


def test_a_manual_disarm_holds_until_its_end_then_the_schedule_resumes() -> None:
    schedule = nights()
    night = utc("2026-06-01T22:00")  # 00:00 CEST, within the night window
    disarmed = Override(False, utc("2026-06-01T23:00"))
    assert monitoring(night, schedule, BERLIN, disarmed) == (False, utc("2026-06-01T23:00"))
    assert monitoring(utc("2026-06-01T23:00"), schedule, BERLIN, disarmed) == (True, utc("2026-06-02T04:00"))
    # An arm whose end meets the schedule's own window: monitored on through that window.
    armed = Override(True, utc("2026-06-02T21:00"))
    assert monitoring(utc("2026-06-02T12:00"), schedule, BERLIN, armed) == (True, utc("2026-06-03T04:00"))
    assert monitoring(utc("2026-06-02T12:00"), None, BERLIN, Override(False)) == (False, None)


def test_an_end_past_the_calendars_horizon_is_kept_as_it_is() -> None:
    # A manual end near the end of the calendar (stored before ends were bounded, or set in the database) must not
    # break the account: the schedule's 35-day look-ahead from it would run past year 9999.
    far = datetime(9999, 12, 30, tzinfo=UTC)
    assert monitoring(utc("2026-06-02T12:00"), nights(), BERLIN, Override(False, far)) == (False, far)


async def test_ends_further_than_a_year_are_refused(scheduled: Config) -> None:
    async with running(scheduled) as services:
        daemon = Daemon(services)
        await daemon.add_user()
        token = await daemon.token()
        account = (await daemon.api("GET", "/api/accounts", token))[1]["accounts"][0]
        camera = account["cameras"][0]
        for until in ("99999999d", "9999-12-01T00:00:00+00:00", "9999-12-31T23:00", "400d"):
            for path in (f"/api/accounts/{account['id']}/disarm", f"/api/cameras/{camera['id']}/snooze"):
                status, body = await daemon.api("POST", path, token, json={"until": until})
                assert status == 400 and "until" in body["fields"], (path, until, status, body)
        status, body = await daemon.api("POST", f"/api/accounts/{account['id']}/disarm", token, json={"until": "300d"})
        assert status == 200 and body["manual"]["monitored"] is False
        assert (await daemon.api("GET", f"/api/accounts/{account['id']}", token))[0] == 200
        event = await _mail(daemon, 1)
        assert event["flags"] == ["unmonitored"]


def test_the_schedule_survives_its_json_form() -> None:
    schedule = Schedule(weekly=(WeeklyWindow(WEEKENDS, Window(0, 24 * 60)),),
                        exceptions=(DatedException(date(2026, 5, 1), date(2026, 5, 3), (Window(600, 660),), "x"),))
    assert Schedule.from_json(schedule.to_json()) == schedule


# --- configuration --------------------------------------------------------------------------------------------


def test_a_schedule_in_the_configuration() -> None:
    config = parse_config_text("""
site: {timezone: Europe/Berlin}
accounts:
  - name: Shop
    schedule:
      weekly:
        - {days: mon-fri, from: 18:00, to: "07:30"}
        - {days: [sat, sun], from: "00:00", to: "24:00"}
      exceptions:
        - {date: 2026-12-25, until: 2026-12-26, name: Christmas, monitored: true}
        - {date: 2026-12-31, from: "12:00", to: "24:00"}
""")
    schedule = config.accounts[0].schedule
    assert config.site.timezone == "Europe/Berlin"
    assert schedule is not None
    assert schedule.weekly == (WeeklyWindow(frozenset(range(5)), Window(18 * 60, 7 * 60 + 30)),
                               WeeklyWindow(WEEKENDS, Window(0, 24 * 60)))
    assert schedule.exceptions == (
        DatedException(date(2026, 12, 25), date(2026, 12, 26), (Window(0, 24 * 60),), "Christmas"),
        DatedException(date(2026, 12, 31), date(2026, 12, 31), (Window(12 * 60, 24 * 60),), ""))
    assert parse_config_text("accounts: [{name: A}]").accounts[0].schedule is None  # around the clock


def test_schedule_errors_name_the_file_line_and_key() -> None:
    text = """site:
  timezone: Europe/Berln
accounts:
  - name: Shop
    schedule:
      weekly:
        - {days: mon-fry, from: "18:00", to: "07:30"}
        - {days: sat, from: "25:00", to: "07:30"}
        - {days: sun, form: "10:00", to: "11:00"}
      exceptions:
        - {date: 2026-02-30, monitored: true}
        - {date: 2026-12-24, monitored: true, from: "10:00", to: "12:00"}
"""
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, "shop.yaml")
    problems = [str(p) for p in caught.value.problems]
    assert any(p.startswith("shop.yaml:2: site.timezone:") and "Europe/Berlin" in p for p in problems), problems
    assert any(p.startswith("shop.yaml:7: accounts[0].schedule.weekly[0].days:") and "'fry'" in p
               for p in problems), problems
    assert any(p.startswith("shop.yaml:8: accounts[0].schedule.weekly[1].from:") for p in problems), problems
    assert any(p.startswith("shop.yaml:9: accounts[0].schedule.weekly[2].form: unknown key; did you mean `from`?")
               for p in problems), problems
    assert any(p.startswith("shop.yaml:11: accounts[0].schedule.exceptions[0].date:") for p in problems), problems
    assert any(p.startswith("shop.yaml:12: accounts[0].schedule.exceptions[1]:") for p in problems), problems


def test_the_time_zone_defaults_to_the_systems(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    assert system_timezone() == "America/New_York"
    assert parse_config_text("").site.timezone == "America/New_York"
    monkeypatch.setenv("TZ", "Not/AZone")
    assert system_timezone() != "Not/AZone"  # the system's own, or UTC


# --- over the running daemon ----------------------------------------------------------------------------------


async def _mail(daemon: Daemon, n: int, to: str = "camera-front@monitor.local") -> dict[str, Any]:
    replies = await daemon.send(distinct(sample("reolink-person.eml"), n), to=to)
    assert replies["data"][0] == 250, replies
    await daemon.wait_idle()
    status, body = await daemon.api("GET", "/api/events?status=all&limit=1", await daemon.token())
    assert status == 200
    return body["events"][0]


async def _queue_ids(daemon: Daemon) -> list[int]:
    status, body = await daemon.api("GET", "/api/events?status=active&order=queue", await daemon.token())
    assert status == 200, body
    return [event["id"] for event in body["events"]]


async def poll(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 5.0) -> None:
    """Ask the API until *check* holds; fail after *timeout* seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


def _audit(daemon: Daemon) -> list[tuple[str, str, dict[str, Any]]]:
    path = daemon.config.storage.data_dir / "vmond.db"
    with sqlite3.connect(path) as conn:
        rows = conn.execute('SELECT "action", "target_type", "detail" FROM "audit_entry" ORDER BY "id"').fetchall()
    conn.close()
    return [(a, t, json.loads(d)) for a, t, d in rows]


async def test_disarm_flags_events_unmonitored_and_keeps_them_off_the_wall(daemon: Daemon) -> None:
    await daemon.add_user()
    await daemon.add_user("sup", "supervisor")
    await daemon.add_user("guard", "guard")
    token = await daemon.token("sup")
    status, accounts = await daemon.api("GET", "/api/accounts", token)
    account = accounts["accounts"][0]
    assert account["monitoring"] == {"monitored": True, "until": None, "by": "always", "manual": None}
    status, body = await daemon.api("POST", f"/api/accounts/{account['id']}/disarm", await daemon.token("guard"),
                                    json={})
    assert status == 403

    status, body = await daemon.api("POST", f"/api/accounts/{account['id']}/disarm", token,
                                    json={"reason": "owner is in"})
    assert status == 200, body
    assert body["monitoring"]["monitored"] is False and body["monitoring"]["by"] == "manual"
    assert body["manual"] == {"monitored": False, "until": None, "reason": "owner is in", "by": "sup"}
    quiet = await _mail(daemon, 1)
    assert "unmonitored" in quiet["flags"] and quiet["status"] == "active"
    assert quiet["id"] not in await _queue_ids(daemon)
    status, listed = await daemon.api("GET", "/api/events?status=active", token)
    assert quiet["id"] in [e["id"] for e in listed["events"]]  # stored and listed, only not on the wall

    status, body = await daemon.api("POST", f"/api/accounts/{account['id']}/arm", token, json={"until": "1h"})
    assert status == 200 and body["monitoring"]["monitored"] is True
    loud = await _mail(daemon, 2)
    assert "unmonitored" not in loud["flags"]
    assert await _queue_ids(daemon) == [loud["id"]]
    actions = [(a, t, d["reason"]) for a, t, d in _audit(daemon) if t == "account"]
    assert actions == [("account.disarm", "account", "owner is in"), ("account.arm", "account", "")]


async def test_a_manual_disarm_ends_by_itself(daemon: Daemon) -> None:
    await daemon.add_user()
    token = await daemon.token()
    account_id = (await daemon.api("GET", "/api/accounts", token))[1]["accounts"][0]["id"]
    for bad in ({"until": "yesterday"}, {"until": "2020-01-01T00:00:00Z"}, {"until": 5}, {"reason": "x" * 201}):
        status, body = await daemon.api("POST", f"/api/accounts/{account_id}/disarm", token, json=bad)
        assert status == 400 and set(body["fields"]) <= {"until", "reason"} and body["fields"], (bad, body)
    until = utcnow() + timedelta(seconds=1.5)
    status, body = await daemon.api("POST", f"/api/accounts/{account_id}/disarm", token,
                                    json={"until": until.isoformat()})
    assert status == 200 and body["monitoring"] == {
        "monitored": False, "until": until.isoformat(), "by": "manual", "manual": body["manual"]}
    assert "unmonitored" in (await _mail(daemon, 1))["flags"]

    async def monitored_again() -> bool:
        _, account = await daemon.api("GET", f"/api/accounts/{account_id}", token)
        return bool(account["monitoring"]["monitored"])
    await poll(monitored_again, "the disarm to end")
    event = await _mail(daemon, 2)
    assert "unmonitored" not in event["flags"] and event["id"] in await _queue_ids(daemon)


async def test_snooze_flags_only_that_cameras_events_until_unsnoozed(daemon: Daemon) -> None:
    await daemon.add_user()
    token = await daemon.token()
    cameras = (await daemon.api("GET", "/api/cameras", token))[1]["cameras"]
    front = next(c for c in cameras if c["smtp_address"].startswith("camera-front"))
    assert front["snoozed"] is False
    status, body = await daemon.api("POST", f"/api/cameras/{front['id']}/snooze", token, json={"until": "25h"})
    assert status == 400 and "at most 1d" in body["fields"]["until"], body
    status, body = await daemon.api("POST", f"/api/cameras/{front['id']}/snooze", token, json={"reason": "spider"})
    assert status == 200 and body["snoozed"] is True and body["snooze_reason"] == "spider", body
    until = datetime.fromisoformat(body["snoozed_until"])
    assert abs((until - utcnow()) - timedelta(hours=24)) < timedelta(minutes=1)  # supervision.max_snooze

    snoozed = await _mail(daemon, 1)
    other = await _mail(daemon, 2, to="camera-back@monitor.local")
    assert "snoozed" in snoozed["flags"] and "snoozed" not in other["flags"]
    assert await _queue_ids(daemon) == [other["id"]]

    status, body = await daemon.api("POST", f"/api/cameras/{front['id']}/unsnooze", token)
    assert status == 200 and body["snoozed"] is False and body["snoozed_until"] is None
    awake = await _mail(daemon, 3)
    assert "snoozed" not in awake["flags"] and awake["id"] in await _queue_ids(daemon)
    assert [a for a, t, _ in _audit(daemon) if t == "camera"] == ["camera.snooze", "camera.unsnooze"]


async def test_a_snooze_ends_by_itself(daemon: Daemon) -> None:
    await daemon.add_user()
    token = await daemon.token()
    camera_id = (await daemon.api("GET", "/api/cameras", token))[1]["cameras"][0]["id"]
    status, body = await daemon.api("POST", f"/api/cameras/{camera_id}/snooze", token, json={"until": "1s"})
    assert status == 200 and body["snoozed"] is True

    async def awake() -> bool:
        return not (await daemon.api("GET", f"/api/cameras/{camera_id}", token))[1]["snoozed"]
    await poll(awake, "the snooze to end")


@pytest.fixture
def scheduled(make_config: Callable[..., Config]) -> Config:
    """The test account monitored only on an exception day far in the past: never now."""
    return make_config(site={"id": "test-site", "timezone": "Europe/Berlin"}, accounts=[{
        "name": "Test Customer",
        "schedule": {"exceptions": [{"date": "2001-01-01", "monitored": True}]},
        "cameras": [{"name": "Front Door", "smtp_address": "camera-front"}]}])


async def test_an_account_outside_its_schedule_is_unmonitored(scheduled: Config) -> None:
    async with running(scheduled) as services:
        daemon = Daemon(services)
        await daemon.add_user()
        token = await daemon.token()
        account = (await daemon.api("GET", "/api/accounts", token))[1]["accounts"][0]
        assert account["monitoring"] == {"monitored": False, "until": None, "by": "schedule", "manual": None}
        event = await _mail(daemon, 1)
        assert event["flags"] == ["unmonitored"] and await _queue_ids(daemon) == []


def test_the_wall_query_walks_an_index(tmp_path: Path) -> None:
    db = open_sqlite(tmp_path / "vmond.db")  # binds the models
    try:
        captured: list[str] = []
        db.connection().set_trace_callback(captured.append)
        list_queue("monitor.local")
        db.connection().set_trace_callback(None)
        sql = next(s for s in captured if '"alarm_event"' in s and "ORDER BY" in s)
        plan = " ".join(str(row) for row in db.connection().execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert "alarm_event_wall" in plan, plan
    finally:
        db.close()


async def test_the_pages_arm_disarm_snooze_and_the_wall_counts_snoozed_cameras(daemon: Daemon) -> None:
    await daemon.add_user()
    token = await daemon.token()
    account = (await daemon.api("GET", "/api/accounts", token))[1]["accounts"][0]
    camera = account["cameras"][0]
    async with browser_session() as http:
        csrf = await log_in(daemon, http)
        page = f"{daemon.url}/accounts/{account['id']}"
        async with http.get(page) as response:
            html = await response.text()
        assert "Monitored now" in html and "around the clock" in html
        async with http.post(f"{page}/disarm", data={"csrf_token": csrf, "until": "2h", "reason": "open house"},
                             headers={"Origin": daemon.url}) as response:
            assert response.status == 200 and response.url.path == f"/accounts/{account['id']}"
            html = await response.text()
        assert "Not monitored now" in html and "open house" in html and "admin disarmed it until" in html
        async with http.post(f"{page}/disarm", data={"csrf_token": csrf, "until": "tomorrow-ish"},
                             headers={"Origin": daemon.url}) as response:
            assert response.status == 400

        async with http.get(f"{daemon.url}/") as response:
            assert "data-snoozed-cameras" not in await response.text()
        async with http.post(f"{daemon.url}/cameras/{camera['id']}/snooze",
                             data={"csrf_token": csrf, "until": "30m", "reason": "spider web"},
                             headers={"Origin": daemon.url}) as response:
            assert response.status == 200
            assert 'data-snoozed="true"' in await response.text()
        async with http.get(f"{daemon.url}/") as response:
            html = await response.text()
        assert 'data-snoozed-cameras="1"' in html and "1 camera snoozed" in html
        async with http.post(f"{daemon.url}/cameras/{camera['id']}/unsnooze", data={"csrf_token": csrf},
                             headers={"Origin": daemon.url}) as response:
            assert response.status == 200 and 'data-snoozed="false"' in await response.text()


async def test_a_mail_does_not_join_an_event_across_the_wall_line(make_config: Callable[..., Config]) -> None:
    async with running(make_config(events={"coalesce_window": "5m"})) as services:
        daemon = Daemon(services)
        await daemon.add_user()
        token = await daemon.token()
        account_id = (await daemon.api("GET", "/api/accounts", token))[1]["accounts"][0]["id"]
        await daemon.api("POST", f"/api/accounts/{account_id}/disarm", token, json={})
        quiet = await _mail(daemon, 1)
        assert (await _mail(daemon, 2))["id"] == quiet["id"]  # within the window, both unmonitored: one event
        await daemon.api("POST", f"/api/accounts/{account_id}/arm", token, json={})
        loud = await _mail(daemon, 3)
        assert loud["id"] != quiet["id"] and loud["flags"] == [] and await _queue_ids(daemon) == [loud["id"]]
        assert (await _mail(daemon, 4))["id"] == loud["id"]


def test_recorded_mails_follow_the_schedule_across_dst_and_a_holiday_and_say_so_over_mqtt(tmp_path: Path) -> None:
    config = parse_config_text("""
site: {timezone: Europe/Berlin}
accounts:
  - name: Shop
    schedule:
      weekly: [{days: daily, from: "22:00", to: "06:00"}]
      exceptions: [{date: 2026-12-25, name: Christmas, monitored: true}]
    cameras: [{name: Door, smtp_address: camera-front}]
""")
    db = open_sqlite(tmp_path / "vmond.db")
    try:
        with db.atomic():
            sync_accounts(config.accounts)
        expected = {"2026-03-29T03:30": [],  # 05:30 CEST, the first morning of summer time: still the night
                    "2026-03-29T04:30": ["unmonitored"],  # 06:30 CEST (it would be 05:30 CET: monitored)
                    "2026-12-24T12:00": ["unmonitored"],
                    "2026-12-25T12:00": []}  # Christmas Day: monitored all day
        for n, (at, flags) in enumerate(expected.items()):
            change = Change(Topics("vmond", "test-site"))
            with db.atomic():
                result = record_mail("monitor.local", replace(record(f"k{n}"), received_at=utc(at)), 0.0, change,
                                     timezone=config.site.timezone)
            assert result.event["flags"] == flags, at
            payload = json.loads(OutboxMessage.select().order_by(OutboxMessage.id.desc()).first().payload)
            assert payload["event"]["flags"] == flags
        assert [e["received_at"][:16] for e in list_queue("monitor.local")] == ["2026-03-29T03:30", "2026-12-25T12:00"]
    finally:
        db.close()


def _position_of_migration_12() -> int:
    """Where migration 12 is in the list (the numbers of other branches' migrations are set when they merge)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for index, step in enumerate(migrations.MIGRATIONS):
            step(conn)
            if "off_wall" in {row[1] for row in conn.execute('PRAGMA table_info("alarm_event")')}:
                return index
    finally:
        conn.close()
    raise AssertionError("no migration adds alarm_event.off_wall")


def test_migration_12_on_an_existing_database(tmp_path: Path) -> None:
    """A database of the schema before (an account, a camera and an event on the wall) is brought forward: the
    event stays on the wall, the account has no schedule (around the clock) and the camera is not snoozed."""
    path = tmp_path / "vmond.db"
    conn = sqlite3.connect(path, isolation_level=None)
    before = _position_of_migration_12()
    for step in migrations.MIGRATIONS[:before]:
        step(conn)
    conn.execute(f"PRAGMA user_version = {before}")
    at = "2026-01-01T00:00:00.000000Z"
    conn.execute("INSERT INTO account (name, address, notes, armed, from_config, created_at, updated_at) "
                 f"VALUES ('Old Shop', '', '', 1, 0, '{at}', '{at}')")
    conn.execute("INSERT INTO camera (account_id, name, smtp_local_part, active, from_config, created_at) "
                 f"VALUES (1, 'Door', 'camera-door', 1, 0, '{at}')")
    conn.execute("INSERT INTO alarm_event (camera_id, received_at, updated_at, event_time, event_type, subject, "
                 "body_excerpt, status, is_test, flags, mail_count, video_state) "
                 f"VALUES (1, '{at}', '{at}', '{at}', 'Motion', '', '', 'active', 0, '[]', 1, 'none')")
    conn.close()
    db = open_sqlite(path)
    try:
        assert migrations.schema_version(db.connection()) == migrations.LATEST
        assert [e["id"] for e in list_queue("monitor.local")] == [1]
        (account,) = list_accounts("monitor.local")
        assert account["schedule"] is None and account["manual"] is None
        assert monitoring_dict(account, "UTC")["by"] == "always"
        assert account["cameras"][0]["snoozed"] is False
    finally:
        db.close()
