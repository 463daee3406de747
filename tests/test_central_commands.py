"""A central station's operator acts on a site's events and alarms (issue 18): each action is a signed command to
the site, pending until the site answers, then done or refused; the site applies it as its own guard's click."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from centralsite import Central, central, edge_settings, poll, until_edge_listens, write_central_config  # noqa: F401
from conftest import BASE_CONFIG, PASSWORD, Daemon, distinct, merge, sample
from daemon_process import process_with_admin
from mosquitto import Mosquitto

from vmond.config import Config, load_config
from vmond.daemon import running
from vmond.web.remote import CommandSecrets

pytestmark = pytest.mark.usefixtures("quick_mqtt")
MAIL = "hikvision-ipc-intrusion.eml"
PLAN = [{"text": "Call the keyholder"}, {"text": "Check the yard"}]
OPERATOR = {"id": None, "username": "admin at Central One"}


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    """A broker that keeps its sessions across its own restart (the outage test stops it)."""
    server = Mosquitto(tmp_path / "broker", persistence=True)
    server.start()
    yield server
    server.stop()


@asynccontextmanager
async def edge_daemon(make_config: Callable[..., Config], port: int, again: bool = False) -> AsyncIterator[Daemon]:
    """The edge (an appliance taking commands, its account with an action plan) in the test's loop; *again*:
    started once more on the same data."""
    account = merge(BASE_CONFIG["accounts"][0], {"action_plan": PLAN})
    async with running(make_config(**edge_settings(port), accounts=[account])) as services:
        daemon = Daemon(services)
        if not again:
            await daemon.add_user()
        yield daemon


async def mirrored_event(edge: Daemon, station: Central) -> tuple[int, int]:
    """A camera's mail at the edge, and that event on the central: (edge's id, central's id)."""
    await edge.send(sample(MAIL))
    await edge.wait_idle()
    _, events = await edge.api("GET", "/api/events", await edge.token())
    [event] = await poll(lambda: station.list("/api/events", "events"), "the event on the central")
    return int(events["events"][0]["id"]), int(event["id"])


async def answered(station: Central, path: str, command: str = "done", **expected: Any) -> dict[str, Any]:
    """The central's event or alarm at *path* once its newest command is in state *command* and it shows
    *expected*."""
    async def check() -> dict[str, Any] | None:
        shown = await station.get(path)
        commands = shown.get("commands") or [{}]
        return shown if commands[0].get("state") == command and all(
            shown.get(k) == v for k, v in expected.items()) else None
    return dict(await poll(check, f"{path}: the command {command}, with {expected}", timeout=20))


def texts(shown: dict[str, Any]) -> list[str]:
    return [entry["text"] for entry in shown["audit"]]


async def test_actions_at_the_central_are_applied_at_the_edge_and_come_back_done(
        make_config: Callable[..., Config], broker: Mosquitto, central: Central) -> None:  # noqa: F811
    async with edge_daemon(make_config, broker.port) as edge:
        token = await edge.token()
        await until_edge_listens(broker.port)
        edge_id, event_id = await mirrored_event(edge, central)

        status, sent = await central.call("POST", f"/api/events/{event_id}/dismiss")
        assert status == 202, sent
        assert sent["command"]["state"] == "pending" and sent["command"]["action"] == "dismiss"
        assert sent["event"]["id"] == event_id and sent["event"]["status"] == "active"  # the mirror, as it is
        event = await answered(central, f"/api/events/{event_id}", status="dismissed")
        assert event["commands"][0]["id"] == sent["command"]["id"] and event["commands"][0]["error"] is None
        _, at_edge = await edge.api("GET", f"/api/events/{edge_id}", token)
        assert at_edge["status"] == "dismissed"
        assert "admin at Central One dismissed the event" in texts(at_edge)

        status, sent = await central.call("POST", f"/api/events/{event_id}/restore")
        assert status == 202, sent
        await answered(central, f"/api/events/{event_id}", status="active")

        status, sent = await central.call("POST", f"/api/events/{event_id}/alarm")
        assert status == 202 and sent["command"]["action"] == "alarm", sent
        [alarm] = await poll(lambda: central.list("/api/alarms", "alarms"), "the alarm on the central")
        alarm_id, path = alarm["id"], f"/api/alarms/{alarm['id']}"
        alarm = await answered(central, path)
        assert alarm["opened_by"] == alarm["acknowledged_by"] == OPERATOR
        assert [c["action"] for c in alarm["commands"]] == ["alarm"]
        status, same = await central.call("POST", f"/api/events/{event_id}/alarm")  # raised already: no command
        assert status == 200 and same["id"] == alarm_id, same

        # Checked at the central as its own alarms are: nothing is sent for these.
        for route, body, code in ((f"{path}/notes", {"text": "  "}, 400), (f"{path}/notes", {"text": "x" * 4001}, 400),
                                  (f"{path}/steps/9", None, 404), (f"{path}/resolve", {"code": "bogus"}, 400)):
            status, refused = await central.call("POST", route, body)
            assert status == code, (route, refused)
        status, refused = await central.call("POST", f"{path}/resolve", {"resolution": "a cat"})
        assert status == 400 and refused["fields"] == {"code": "required"}
        assert len((await central.get(path))["commands"]) == 1

        status, sent = await central.call("POST", f"{path}/notes", {"text": "keyholder on the way"})
        assert status == 202 and sent["alarm"]["id"] == alarm_id, sent
        await answered(central, path)
        status, sent = await central.call("POST", f"{path}/steps/2")
        assert status == 202, sent
        await answered(central, path)
        status, sent = await central.call("POST", f"{path}/resolve", {"code": "false_alarm", "resolution": "a cat"})
        assert status == 202, sent
        alarm = await answered(central, path, state="resolved")
        assert alarm["resolved_by"] == OPERATOR and [n["text"] for n in alarm["notes"]] == ["keyholder on the way"]
        # (a step alone is not published by the site: its tick comes with the next published change)
        assert alarm["steps"][1]["done_by"] == OPERATOR and alarm["steps"][0]["done_by"] is None
        assert [c["action"] for c in alarm["commands"]] == ["resolve", "step", "note", "alarm"]
        assert {c["state"] for c in alarm["commands"]} == {"done"}

        _, edge_alarms = await edge.api("GET", "/api/alarms?state=all", token)
        _, at_edge = await edge.api("GET", f"/api/alarms/{edge_alarms['alarms'][0]['id']}", token)
        assert at_edge["state"] == "resolved" and at_edge["resolution"]["code"] == "false_alarm"
        assert at_edge["resolved_by"] == OPERATOR and [n["text"] for n in at_edge["notes"]] == ["keyholder on the way"]
        worded = texts(at_edge)
        assert "admin at Central One added a note: keyholder on the way" in worded
        assert any(t.startswith("admin at Central One resolved it as False alarm") for t in worded)

        listed = (await central.get("/api/commands?state=all"))["commands"]
        assert [c["action"] for c in listed] == ["resolve", "step", "note", "alarm", "restore", "dismiss"]
        assert (await central.get("/api/commands"))["commands"] == []  # none pending


async def test_actions_at_the_edge_reach_the_central_and_a_stale_command_is_refused(
        make_config: Callable[..., Config], broker: Mosquitto, central: Central) -> None:  # noqa: F811
    async with edge_daemon(make_config, broker.port) as edge:
        token = await edge.token()
        await until_edge_listens(broker.port)
        edge_id, event_id = await mirrored_event(edge, central)
        status, alarm = await edge.api("POST", f"/api/events/{edge_id}/alarm", token)
        assert status == 201, alarm
        edge_alarm = f"/api/alarms/{alarm['id']}"
        assert (await edge.api("POST", f"{edge_alarm}/notes", token, json={"text": "on my way"}))[0] == 201
        status, _ = await edge.api("POST", f"{edge_alarm}/resolve", token, json={"code": "false_alarm"})
        assert status == 200
        [alarm] = await poll(lambda: central.list("/api/alarms?state=all", "alarms"), "the alarm on the central")
        path = f"/api/alarms/{alarm['id']}"
        alarm = await poll(lambda: _resolved(central, path), "the edge's resolution on the central")
        assert [n["text"] for n in alarm["notes"]] == ["on my way"]
        assert alarm["resolved_by"]["username"] == "admin at Test Site"

        # The operator's screen was behind: the site refuses, and the central shows why.
        status, sent = await central.call("POST", f"{path}/resolve", {"code": "intruder_police"})
        assert status == 202 and sent["command"]["state"] == "pending", sent
        alarm = await answered(central, path, "refused", state="resolved")
        error = alarm["commands"][0]["error"]
        assert error.startswith("resolved locally at ") and error.endswith(" by admin"), error
        assert alarm["resolution"]["code"] == "false_alarm"
        assert [c["id"] for c in (await central.get("/api/commands?state=refused"))["commands"]] == \
            [sent["command"]["id"]]


async def _resolved(station: Central, path: str) -> dict[str, Any] | None:
    alarm = await station.get(path)
    return alarm if alarm["state"] == "resolved" else None


async def signed_in_as(station: Central, admin: str, username: str, role: str) -> None:
    """A new user of the central (made with the *admin* token), whose token the station's calls use from now on."""
    station.token = admin
    status, user = await station.call("POST", "/api/users", {"username": username, "password": PASSWORD,
                                                              "role": role})
    assert status == 201, user
    status, token = await station.call("POST", "/api/token", {"username": username, "password": PASSWORD})
    assert status == 200, token
    station.token = token["access_token"]


async def test_a_bulk_dismiss_and_its_undo_go_to_the_site(
        make_config: Callable[..., Config], broker: Mosquitto, central: Central) -> None:  # noqa: F811
    async with edge_daemon(make_config, broker.port) as edge:
        await until_edge_listens(broker.port)
        await edge.send(sample(MAIL))
        await edge.send(distinct(sample(MAIL), 1))
        events = await poll(lambda: _two(central), "both events on the central")
        ids = sorted(e["id"] for e in events)
        admin = central.token
        await signed_in_as(central, admin, "guard1", "guard")
        status, answer = await central.call("POST", "/api/events/dismiss", {"ids": [*ids, 987654]})
        assert status == 202, answer
        assert answer["dismissed"] == [] and answer["skipped"] == [{"id": 987654, "reason": "unknown"}]
        assert sorted(c["event_id"] for c in answer["commands"]) == ids
        assert {c["action"] for c in answer["commands"]} == {"dismiss"}
        for event_id in ids:
            await answered(central, f"/api/events/{event_id}", status="dismissed")

        # The guard's undo is theirs alone (within the window); a supervisor may restore any.
        status, answer = await central.call("POST", f"/api/events/{ids[0]}/restore")
        assert status == 202 and answer["command"]["action"] == "restore", answer
        await signed_in_as(central, admin, "guard2", "guard")
        status, answer = await central.call("POST", f"/api/events/{ids[1]}/restore")
        assert status == 403 and "only a supervisor" in answer["error"], answer
        await signed_in_as(central, admin, "boss", "supervisor")
        status, answer = await central.call("POST", f"/api/events/{ids[1]}/restore")
        assert status == 202, answer
        for event_id in ids:
            await answered(central, f"/api/events/{event_id}", status="active")
        _, at_edge = await edge.api("GET", "/api/events", await edge.token())
        assert sorted(e["status"] for e in at_edge["events"]) == ["active", "active"]


async def _two(station: Central) -> list[dict[str, Any]] | None:
    events = await station.list("/api/events", "events")
    return events if len(events) == 2 else None


async def test_a_command_for_an_edge_that_is_down_is_applied_once_when_it_is_back(
        make_config: Callable[..., Config], broker: Mosquitto, central: Central) -> None:  # noqa: F811
    async with edge_daemon(make_config, broker.port) as edge:
        await until_edge_listens(broker.port)  # its commands session is on the broker from now on
        edge_id, event_id = await mirrored_event(edge, central)
    status, sent = await central.call("POST", f"/api/events/{event_id}/dismiss")
    assert status == 202 and sent["command"]["state"] == "pending", sent
    assert (await central.get(f"/api/events/{event_id}"))["commands"][0]["state"] == "pending"
    async with edge_daemon(make_config, broker.port, again=True) as edge:
        await answered(central, f"/api/events/{event_id}", status="dismissed")
        _, at_edge = await edge.api("GET", f"/api/events/{edge_id}", await edge.token())
        assert [e["text"] for e in at_edge["audit"] if e["action"] == "event.dismissed"] == \
            ["admin at Central One dismissed the event"]


async def test_a_central_killed_right_after_an_action_still_sends_it(
        make_config: Callable[..., Config], broker: Mosquitto, central: Central) -> None:  # noqa: F811
    async with edge_daemon(make_config, broker.port) as edge:
        await until_edge_listens(broker.port)
        edge_id, event_id = await mirrored_event(edge, central)
        broker.stop()  # so the command can only be in the central's outbox when it dies
        status, sent = await central.call("POST", f"/api/events/{event_id}/dismiss")
        assert status == 202, sent
        central.process.stop(signal.SIGKILL)
        broker.start()
        await until_edge_listens(broker.port)
        central.restart()
        await answered(central, f"/api/events/{event_id}", status="dismissed")
        _, at_edge = await edge.api("GET", f"/api/events/{edge_id}", await edge.token())
        assert at_edge["status"] == "dismissed"
        assert len([e for e in at_edge["audit"] if e["action"] == "event.dismissed"]) == 1


async def test_a_central_without_the_sites_secret_sends_nothing(
        make_config: Callable[..., Config], broker: Mosquitto, tmp_path: Path) -> None:
    directory = tmp_path / "central"
    config = write_central_config(directory, broker.port, sites=[{"id": "test-site"}])
    async with edge_daemon(make_config, broker.port) as edge:
        with process_with_admin(directory, config) as process:
            process.start()
            station = Central(process, directory)
            _, event_id = await mirrored_event(edge, station)
            status, refused = await station.call("POST", f"/api/events/{event_id}/dismiss")
            assert status == 409 and "no command secret for site test-site" in refused["error"], refused
            status, answer = await station.call("POST", "/api/events/dismiss", {"ids": [event_id]})
            assert status == 200 and answer == {"dismissed": [], "skipped": [
                {"id": event_id, "reason": "no_command_secret"}]}, answer
            assert (await station.get("/api/commands?state=all"))["commands"] == []
            assert (await station.get(f"/api/events/{event_id}"))["commands"] == []
            assert process.stop() == 0


async def test_command_secrets_are_read_once_per_configuration(tmp_path: Path) -> None:
    secret_file = tmp_path / "site-a.secret"
    secret_file.write_text("from-the-file\n")
    gone = tmp_path / "site-c.secret"
    gone.write_text("soon gone")
    sites = [{"id": "site-a", "command_secret_file": str(secret_file)}, {"id": "site-b"},
             {"id": "site-c", "command_secret_file": str(gone)}]
    config = load_config(write_central_config(tmp_path / "central", 1883, sites=sites, command_secret="default"))
    gone.unlink()  # removed (or made unreadable) after the start
    with ThreadPoolExecutor(1) as io:
        secrets = CommandSecrets(io)
        assert await secrets.get(config, "site-a") == "from-the-file"
        secret_file.unlink()
        assert await secrets.get(config, "site-a") == "from-the-file"  # kept: no file read per action
        assert await secrets.get(config, "site-b") == "default"
        assert await secrets.get(config, "site-c") is None  # unreadable: the action answers 409
        gone.write_text("back")
        assert await secrets.get(config, "site-c") == "back"  # a failed read is tried again at the next action
        secret_file.write_text("changed")
        reloaded = load_config(tmp_path / "central" / "vmond.yaml")
        assert await secrets.get(reloaded, "site-a") == "changed"  # a new configuration: read again
