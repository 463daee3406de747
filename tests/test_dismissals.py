"""Dismissing safely over the API: bulk dismiss, the guard's undo within its window, restore by supervisors, the
audit trail, the live messages, and the supervisors' page of dismissed events."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from conftest import Daemon, distinct, sample
from test_changes import Seam, _mail, seam  # noqa: F401 - the fixture is used by name
from test_web import browser_session, csrf_of, log_in

from vmond.config import Config
from vmond.daemon import running
from vmond.store import dismissals, outbox
from vmond.store.dismissals import dismiss_events, restore_event
from vmond.store.events import record_mail
from vmond.store.models import AuditEntry
from vmond.store.users import create_user


async def _events(daemon: Daemon, n: int) -> list[int]:
    """*n* new active events, oldest first."""
    raw = sample("swann-nvr-human.eml")
    for i in range(n):
        assert (await daemon.send(distinct(raw, i)))["data"][0] == 250
    await daemon.wait_idle()
    status, body = await daemon.api("GET", "/api/events", await daemon.token("admin"))
    return sorted(e["id"] for e in body["events"])


def _audit(daemon: Daemon) -> Any:
    def read() -> list[tuple[str, int, str | None, dict[str, Any]]]:
        return [(a.action, a.target_id, a.user.username if a.user else None, a.detail)
                for a in AuditEntry.select().where(AuditEntry.target_type == "event").order_by(AuditEntry.id)]
    return daemon.services.db.read(read)


@pytest.fixture
async def people(daemon: Daemon) -> dict[str, str]:
    """Bearer tokens of an admin, a supervisor and two guards."""
    for name, role in (("admin", "admin"), ("boss", "supervisor"), ("guard1", "guard"), ("guard2", "guard")):
        await daemon.add_user(name, role)
    return {name: await daemon.token(name) for name in ("admin", "boss", "guard1", "guard2")}


async def test_bulk_dismiss_dismisses_the_active_ones_and_names_the_rest(daemon: Daemon,
                                                                         people: dict[str, str]) -> None:
    a, b, c, d = await _events(daemon, 4)
    guard = people["guard1"]
    status, alarm = await daemon.api("POST", f"/api/events/{d}/alarm", guard)
    assert status == 201
    assert (await daemon.api("POST", f"/api/events/{c}/dismiss", guard))[0] == 200
    headers = {"Authorization": f"Bearer {guard}"}
    async with aiohttp.ClientSession(headers=headers) as http, http.ws_connect(f"{daemon.url}/ws") as ws:
        status, body = await daemon.api("POST", "/api/events/dismiss", guard,
                                        json={"ids": [b, a, c, d, 999999, b]})
        assert status == 200
        assert body["dismissed"] == [b, a]
        assert body["skipped"] == [{"id": c, "reason": "already_dismissed"}, {"id": d, "reason": "alarmed"},
                                   {"id": 999999, "reason": "unknown"}]
        # Every wall hears of each, in one go after the commit.
        seen = [await ws.receive_json(timeout=5) for _ in range(2)]
        assert [(m["type"], m["data"]["id"], m["data"]["by"]) for m in seen] == [
            ("event.dismissed", b, "guard1"), ("event.dismissed", a, "guard1")]
    status, body = await daemon.api("GET", "/api/events", guard)
    assert body["events"] == []
    trail = await _audit(daemon)
    assert [(action, target, who) for action, target, who, _ in trail if action == "event.dismissed"] == [
        ("event.dismissed", c, "guard1"), ("event.dismissed", b, "guard1"), ("event.dismissed", a, "guard1")]


@pytest.mark.parametrize("body", [{}, {"ids": []}, {"ids": "1,2"}, {"ids": [1, "2"]}, {"ids": [True]},
                                  {"ids": [0]}, {"ids": [2**63]}, {"ids": [1.5]},
                                  {"ids": list(range(1, dismissals.MAX_BULK + 2))}, [1, 2]])
async def test_bulk_dismiss_refuses_what_is_not_a_bounded_list_of_ids(daemon: Daemon, people: dict[str, str],
                                                                      body: Any) -> None:
    status, answer = await daemon.api("POST", "/api/events/dismiss", people["guard1"], json=body)
    assert status == 400 and answer["error"]


async def test_bulk_dismiss_needs_a_signed_in_user_and_the_csrf_token(daemon: Daemon,
                                                                      people: dict[str, str]) -> None:
    (event,) = await _events(daemon, 1)
    assert (await daemon.api("POST", "/api/events/dismiss", None, json={"ids": [event]}))[0] == 401
    assert (await daemon.api("POST", f"/api/events/{event}/restore", None))[0] == 401
    async with browser_session() as http:
        csrf = await log_in(daemon, http, "guard1")
        url = f"{daemon.url}/api/events/dismiss"
        async with http.post(url, json={"ids": [event]}, headers={"Origin": daemon.url}) as response:
            assert response.status == 403
        async with http.post(url, json={"ids": [event]}, headers={"X-CSRF-Token": csrf,
                                                                 "Origin": daemon.url}) as response:
            assert response.status == 200 and (await response.json())["dismissed"] == [event]


async def test_the_guard_who_dismissed_may_undo_within_the_window_and_no_one_else(
        daemon: Daemon, people: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = await _events(daemon, 2)
    guard1, guard2 = people["guard1"], people["guard2"]
    assert (await daemon.api("POST", f"/api/events/{first}/dismiss", guard1))[0] == 200
    # Another guard may not take back what guard1 dismissed.
    status, body = await daemon.api("POST", f"/api/events/{first}/restore", guard2)
    assert status == 403 and "supervisor" in body["error"]
    headers = {"Authorization": f"Bearer {guard2}"}
    async with aiohttp.ClientSession(headers=headers) as http, http.ws_connect(f"{daemon.url}/ws") as ws:
        status, event = await daemon.api("POST", f"/api/events/{first}/restore", guard1)
        assert status == 200 and event["status"] == "active"
        message = await ws.receive_json(timeout=5)  # every wall gets the card back
        assert message["type"] == "event.updated" and message["data"]["status"] == "active"
        assert message["data"]["id"] == first and message["data"]["by"] == "guard1"
    status, body = await daemon.api("GET", "/api/events", guard1)
    assert sorted(e["id"] for e in body["events"]) == [first, second]
    # Restoring what is active changes nothing; an unknown event is a 404.
    assert (await daemon.api("POST", f"/api/events/{first}/restore", guard2))[0] == 200
    assert (await daemon.api("POST", "/api/events/999999/restore", guard1))[0] == 404
    # Once the window is over, the guard's own dismissal is for a supervisor to take back.
    assert (await daemon.api("POST", f"/api/events/{second}/dismiss", guard1))[0] == 200
    monkeypatch.setattr(dismissals, "UNDO_WINDOW", 0.0)
    monkeypatch.setattr(dismissals, "UNDO_GRACE", 0.0)
    status, body = await daemon.api("POST", f"/api/events/{second}/restore", guard1)
    assert status == 403
    status, body = await daemon.api("GET", "/api/events?status=dismissed", guard1)
    assert [e["id"] for e in body["events"]] == [second]
    trail = await _audit(daemon)
    restores = [(target, who, detail["undo"]) for action, target, who, detail in trail if action == "event.restore"]
    assert restores == [(first, "guard1", True)]


async def test_a_supervisor_restores_any_dismissed_event_but_not_an_alarm(daemon: Daemon,
                                                                          people: dict[str, str]) -> None:
    first, second = await _events(daemon, 2)
    assert (await daemon.api("POST", "/api/events/dismiss", people["guard1"], json={"ids": [first]}))[0] == 200
    status, event = await daemon.api("POST", f"/api/events/{first}/restore", people["boss"])
    assert status == 200 and event["status"] == "active"
    assert (await daemon.api("POST", f"/api/events/{second}/alarm", people["guard1"]))[0] == 201
    status, body = await daemon.api("POST", f"/api/events/{second}/restore", people["boss"])
    assert status == 409
    trail = await _audit(daemon)
    assert [(target, who, detail) for action, target, who, detail in trail if action == "event.restore"] == [
        (first, "boss", {"from": "dismissed", "to": "active", "undo": False,
                         "dismissed_by": (await _user_id(daemon, "guard1"))})]


async def _user_id(daemon: Daemon, username: str) -> int:
    from vmond.store.models import User

    return await daemon.services.db.read(lambda: User.get(User.username == username).id)


async def test_the_dismissed_page_shows_who_and_when_to_supervisors_and_restores(
        daemon: Daemon, people: dict[str, str]) -> None:
    first, second = await _events(daemon, 2)
    assert (await daemon.api("POST", f"/api/events/{first}/dismiss", people["guard1"]))[0] == 200
    assert (await daemon.api("POST", f"/api/events/{second}/dismiss", people["guard2"]))[0] == 200
    status, _ = await daemon.api("GET", "/dismissed", people["guard1"])
    assert status == 403
    async with browser_session() as http:
        csrf = await log_in(daemon, http, "boss")
        async with http.get(f"{daemon.url}/") as response:
            assert 'href="/dismissed"' in await response.text()  # in the supervisors' menu
        async with http.get(f"{daemon.url}/dismissed") as response:
            page = await response.text()
        # Most recently dismissed first, each with who dismissed it.
        rows = page.split('data-dismissed-event-id="')[1:]
        assert [int(row.split('"')[0]) for row in rows] == [second, first]
        assert '<td class="dismissed-by" data-label="By">guard2</td>' in rows[0]
        assert '<td class="dismissed-by" data-label="By">guard1</td>' in rows[1]
        assert f'name="csrf_token" value="{csrf}"' in rows[1]  # the Restore form carries the session's token
        # The date filter: nothing was dismissed in 2001.
        async with http.get(f"{daemon.url}/dismissed?from=2001-01-01&to=2001-01-31") as response:
            assert "data-dismissed-event-id" not in await response.text()
        async with http.get(f"{daemon.url}/dismissed?from=yesterday") as response:
            assert response.status == 400
        async with http.post(f"{daemon.url}/events/{first}/restore",
                             data={"csrf_token": csrf, "back": "dismissed", "from": "2020-01-01"},
                             headers={"Origin": daemon.url}) as response:
            assert response.status == 200 and response.url.path == "/dismissed"
            assert response.url.query.get("from") == "2020-01-01"
            assert f'data-dismissed-event-id="{first}"' not in await response.text()
    status, body = await daemon.api("GET", "/api/events", people["boss"])
    assert [e["id"] for e in body["events"]] == [first]


async def test_the_event_page_dismisses(daemon: Daemon, people: dict[str, str]) -> None:
    (event,) = await _events(daemon, 1)
    async with browser_session() as http:
        await log_in(daemon, http, "guard1")
        csrf = await csrf_of(http, f"{daemon.url}/events/{event}")
        async with http.get(f"{daemon.url}/events/{event}") as response:
            assert 'data-action="dismiss"' in await response.text()
        async with http.post(f"{daemon.url}/events/{event}/dismiss", data={"csrf_token": csrf},
                             headers={"Origin": daemon.url}) as response:
            assert response.status == 200 and response.url.path == f"/events/{event}"
            page = await response.text()
            assert "state-dismissed" in page and 'data-action="dismiss"' not in page
            assert 'data-action="restore"' not in page  # restoring is for supervisors
    status, body = await daemon.api("GET", f"/api/events/{event}", people["guard1"])
    assert body["status"] == "dismissed"


async def test_the_central_station_hears_of_each_dismiss_and_restore(seam: Seam) -> None:  # noqa: F811
    guard = await seam.db.write(create_user, "guard", "x", "guard")
    other = await seam.db.write(create_user, "other", "x", "guard")
    ids = [(await seam.changes.record(record_mail, "monitor.local", _mail(key), 0.0)).event["id"] for key in "abc"]
    await seam.db.write(outbox.delivered, [row["id"] for row in await seam.db.read(outbox.pending)])

    dismissed, skipped = await seam.changes.record(dismiss_events, "monitor.local", [*ids, 999], guard["id"])
    assert dismissed == ids and skipped == [{"id": 999, "reason": "unknown"}]
    with pytest.raises(dismissals.RestoreRefused):
        await seam.changes.record(restore_event, "monitor.local", ids[0], other["id"], False)
    event, changed = await seam.changes.record(restore_event, "monitor.local", ids[0], guard["id"], False)
    assert changed and event["status"] == "active"
    sent = [json.loads(row["payload"]) for row in await seam.db.read(outbox.pending)]
    assert [(m["type"], m["event"]["id"], m["event"]["status"]) for m in sent] == [
        *[("update", i, "dismissed") for i in ids], ("update", ids[0], "active")]
    # The undo window is the dismisser's: later, only a supervisor restores.
    later = datetime.now(UTC) + timedelta(seconds=dismissals.UNDO_WINDOW + dismissals.UNDO_GRACE + 1)
    with pytest.raises(dismissals.RestoreRefused):
        await seam.changes.record(restore_event, "monitor.local", ids[1], guard["id"], False, now=later)
    assert (await seam.changes.record(restore_event, "monitor.local", ids[1], other["id"], True, now=later))[1]


async def test_the_dismissed_page_reads_its_days_in_the_sites_time_zone(
        make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch) -> None:
    """The site is 25 hours ahead of the appliance's own clock setting: "today" on the page is the site's."""
    monkeypatch.setenv("TZ", "Pacific/Pago_Pago")  # UTC-11: the system's time zone
    time.tzset()
    try:
        site = {"id": "test-site", "name": "Test Site", "timezone": "Pacific/Kiritimati"}
        async with running(make_config(site=site)) as services:
            daemon = Daemon(services)
            await daemon.add_user("admin", "admin")
            await daemon.add_user("boss", "supervisor")
            token = await daemon.token("boss")
            (event,) = await _events(daemon, 1)
            assert (await daemon.api("POST", f"/api/events/{event}/dismiss", token))[0] == 200
            site_today = datetime.now(ZoneInfo("Pacific/Kiritimati")).date()
            system_today = datetime.now().astimezone().date()
            assert site_today != system_today
            async with browser_session() as http:
                await log_in(daemon, http, "boss")
                for day, listed in ((site_today, True), (system_today, False)):
                    async with http.get(f"{daemon.url}/dismissed?from={day}&to={day}") as response:
                        assert (f'data-dismissed-event-id="{event}"' in await response.text()) is listed, day
    finally:
        monkeypatch.undo()
        time.tzset()
