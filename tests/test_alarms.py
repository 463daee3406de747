"""The alarm workflow over the API: raise, acknowledge, notes, resolve, list and search, live messages, roles."""

from __future__ import annotations

import aiohttp
from conftest import Daemon, sample


async def an_event(daemon: Daemon, name: str = "hikvision-ipc-intrusion.eml",
                   to: str = "camera-front@monitor.local") -> int:
    assert (await daemon.send(sample(name), to=to))["data"][0] == 250
    await daemon.wait_idle()
    events = daemon.services.bus._history
    return [m.data["id"] for m in events if m.type == "event.created"][-1]


async def test_the_whole_alarm_workflow(daemon: Daemon, guard: str) -> None:
    event_id = await an_event(daemon)
    with daemon.services.bus.subscribe() as live:
        status, alarm = await daemon.api("POST", f"/api/events/{event_id}/alarm", guard)
        assert status == 201
        assert alarm["state"] == "acknowledged" and alarm["acknowledged_by"]["username"] == "guard1"
        assert alarm["event_id"] == event_id and alarm["camera"]["name"] == "Front Door"
        seen = []
        while not live._queue.empty():
            message = live._queue.get_nowait()
            if message.type.startswith("alarm.") or message.data.get("status") == "alarmed":
                seen.append(message.type)  # (the clip being made sends event.updated of its own meanwhile)
        # The event turns "alarmed" before the alarm is announced (clip updates of the alarmed event may follow).
        assert seen.count("alarm.created") == 1 and seen.index("event.updated") < seen.index("alarm.created")
    # A second guard pressing "alarm" on the same event gets the same alarm.
    status, again = await daemon.api("POST", f"/api/events/{event_id}/alarm", guard)
    assert status == 200 and again["id"] == alarm["id"]
    status, event = await daemon.api("GET", f"/api/events/{event_id}", guard)
    assert event["status"] == "alarmed"
    status, _ = await daemon.api("POST", f"/api/events/{event_id}/dismiss", guard)
    assert status == 409  # an alarm is worked on its page, not dismissed from the wall

    status, note = await daemon.api("POST", f"/api/alarms/{alarm['id']}/notes", guard,
                                    json={"text": "Called Jane, no answer"})
    assert status == 201 and note["text"] == "Called Jane, no answer" and note["author"]["username"] == "guard1"
    status, _ = await daemon.api("POST", f"/api/alarms/{alarm['id']}/notes", guard, json={"text": "   "})
    assert status == 400
    status, resolved = await daemon.api("POST", f"/api/alarms/{alarm['id']}/resolve", guard,
                                        json={"code": "animal_or_weather", "resolution": "Cat on the fence"})
    assert status == 200 and resolved["state"] == "resolved"
    assert resolved["resolution"]["text"] == "Cat on the fence" and resolved["resolved_by"]["username"] == "guard1"
    status, _ = await daemon.api("POST", f"/api/alarms/{alarm['id']}/resolve", guard, json={"resolution": "x"})
    assert status == 409

    status, detail = await daemon.api("GET", f"/api/alarms/{alarm['id']}", guard)
    assert status == 200
    assert detail["event"]["id"] == event_id and len(detail["event"]["images"]) == 3
    assert detail["account"]["name"] == "Test Customer"
    assert detail["account"]["contacts"] == [{"name": "Jane Keyholder", "phone": "+15550100", "email": None,
                                              "role": "keyholder", "priority": 1}]
    assert [n["text"] for n in detail["notes"]] == ["Called Jane, no answer"]
    actions = [entry["action"] for entry in detail["audit"]]
    assert actions == ["event.alarmed", "alarm.open", "alarm.acknowledge", "alarm.note", "alarm.resolve"]
    assert all(entry["who"]["username"] == "guard1" for entry in detail["audit"])


async def test_resolution_codes(daemon: Daemon, guard: str) -> None:
    event_id = await an_event(daemon)
    _, alarm = await daemon.api("POST", f"/api/events/{event_id}/alarm", guard)
    status, body = await daemon.api("POST", f"/api/alarms/{alarm['id']}/resolve", guard, json={"code": "bogus"})
    assert status == 400 and "resolution code" in body["error"]
    status, body = await daemon.api("POST", f"/api/alarms/{alarm['id']}/resolve", guard, json={"code": "other"})
    assert status == 400
    status, body = await daemon.api("POST", f"/api/alarms/{alarm['id']}/resolve", guard,
                                    json={"code": "intruder_police", "resolution": "Police on site 02:14"})
    assert status == 200 and body["resolution"]["code"] == "intruder_police"
    assert body["resolution"]["label"] == "Intruder: police dispatched"


async def test_taking_over_an_alarm_is_recorded(daemon: Daemon, guard: str) -> None:
    await daemon.add_user("guard2", "guard")
    other = await daemon.token("guard2")
    _, alarm = await daemon.api("POST", f"/api/events/{await an_event(daemon)}/alarm", guard)
    status, taken = await daemon.api("POST", f"/api/alarms/{alarm['id']}/acknowledge", other)
    assert status == 200 and taken["acknowledged_by"]["username"] == "guard2"
    _, detail = await daemon.api("GET", f"/api/alarms/{alarm['id']}", other)
    assert detail["audit"][-1]["action"] == "alarm.acknowledge" and detail["audit"][-1]["detail"]["took_over_from"]


async def test_lists_and_history_search(daemon: Daemon, guard: str) -> None:
    front = await an_event(daemon)
    back = await an_event(daemon, "swann-nvr-human.eml", "camera-back@monitor.local")
    _, first = await daemon.api("POST", f"/api/events/{front}/alarm", guard)
    _, second = await daemon.api("POST", f"/api/events/{back}/alarm", guard)
    await daemon.api("POST", f"/api/alarms/{first['id']}/resolve", guard, json={"code": "false_alarm"})
    status, body = await daemon.api("GET", "/api/alarms", guard)
    assert status == 200 and [a["id"] for a in body["alarms"]] == [second["id"]]
    status, _ = await daemon.api("GET", "/api/alarms?state=all", guard)
    assert status == 403  # the history is for supervisors; a guard sees only what they resolved this shift
    status, body = await daemon.api("GET", "/api/alarms?state=resolved", guard)
    assert status == 200 and [a["id"] for a in body["alarms"]] == [first["id"]]
    await daemon.add_user("boss", "supervisor")
    boss = await daemon.token("boss")
    status, body = await daemon.api("GET", "/api/alarms?state=all", boss)
    assert [a["id"] for a in body["alarms"]] == [second["id"], first["id"]]
    status, body = await daemon.api("GET", "/api/alarms?state=all&q=back", boss)
    assert [a["camera"]["name"] for a in body["alarms"]] == ["Back Yard"]
    status, body = await daemon.api("GET", "/api/alarms?state=resolved&q=test%20customer", boss)
    assert [a["id"] for a in body["alarms"]] == [first["id"]]
    today = first["opened_at"][:10]
    status, body = await daemon.api("GET", f"/api/alarms?state=all&from={today}&to={today}", boss)
    assert len(body["alarms"]) == 2
    status, body = await daemon.api("GET", "/api/alarms?state=all&from=2000-01-01&to=2000-01-02", boss)
    assert body["alarms"] == []
    status, _ = await daemon.api("GET", "/api/alarms?state=bogus", boss)
    assert status == 400
    status, _ = await daemon.api("GET", "/api/alarms/999", guard)
    assert status == 404


async def test_alarm_pages_work_without_javascript(daemon: Daemon) -> None:
    from test_web import browser_session, csrf_of, log_in

    event_id = await an_event(daemon)
    await daemon.add_user("guard1", "guard")
    async with browser_session() as http:
        csrf = await log_in(daemon, http, "guard1")
        async with http.post(f"{daemon.url}/events/{event_id}/alarm", data={"csrf_token": csrf},
                             headers={"Origin": daemon.url}) as response:
            assert response.status == 200 and response.url.path.startswith("/alarms/")
            page = await response.text()
        alarm_url = str(response.url)
        assert 'name="text"' in page and 'data-action="resolve"' in page and "tel:+15550100" in page
        async with http.post(f"{alarm_url}/notes", data={"text": "no CSRF"}) as response:
            assert response.status == 403
        token = await csrf_of(http, alarm_url)
        async with http.post(f"{alarm_url}/notes", data={"text": "Keyholder on the way", "csrf_token": token},
                             headers={"Origin": daemon.url}) as response:
            assert response.status == 200 and "Keyholder on the way" in await response.text()
        async with http.post(f"{alarm_url}/resolve", data={"code": "keyholder_attended", "resolution": "",
                                                           "csrf_token": token},
                             headers={"Origin": daemon.url}) as response:
            page = await response.text()
            assert "Keyholder informed or attended" in page and 'data-action="resolve"' not in page
        async with http.get(f"{daemon.url}/alarms") as response:
            assert response.status == 200 and "No alarms." in await response.text()


async def test_logout_closes_the_sessions_sockets(daemon: Daemon) -> None:
    from test_web import browser_session, log_in

    await daemon.add_user("guard1", "guard")
    async with browser_session() as http:
        csrf = await log_in(daemon, http, "guard1")
        async with http.ws_connect(f"{daemon.url}/ws", origin=daemon.url) as ws:
            async with http.post(f"{daemon.url}/logout", data={"csrf_token": csrf},
                                 headers={"Origin": daemon.url}) as response:
                assert response.url.path == "/login"
            message = await ws.receive(timeout=5)
            assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 4401
