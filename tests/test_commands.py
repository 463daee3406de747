"""Commands from a central station (issue 18), against a real mosquitto and a running daemon: signed commands on
``<prefix>/<site>/commands`` are applied once through the seam, answered on ``commands/result``, and on the trail
as "<user> at <central>"; forged, foreign, stale and replayed ones are refused with a result."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE_CONFIG, Daemon, merge, sample, smtp_send, write_config
from daemon_process import process_with_admin
from helpers import wait_until
from mosquitto import Mosquitto, Subscriber
from test_mqtt_schema import check_message

from vmond.config import Config
from vmond.daemon import running
from vmond.store import remote
from vmond.store.commands import CommandRefused, envelope, read_command
from vmond.util.crashpoints import EXIT_CODE

BASE = "vmond/test-site"
COMMANDS, RESULTS = f"{BASE}/commands", f"{BASE}/commands/result"
EVENTS, ALARMS = f"{BASE}/events", f"{BASE}/alarms"
OPERATOR = {"id": None, "username": "op1 at Central One"}
SECRET = "s3cret-for-test-site"
MAIL = "hikvision-ipc-intrusion.eml"
PLAN = [{"text": "Call the keyholder"}, {"text": "Check the yard"}]

pytestmark = pytest.mark.usefixtures("quick_mqtt")


def now_iso(delta: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + delta).isoformat()


class Central:
    """A test central station: signs and publishes commands, collects the results."""

    def __init__(self, port: int, secret: str = SECRET) -> None:
        self.secret = secret
        self.link = Subscriber(port, [RESULTS, EVENTS, ALARMS, f"{BASE}/media/#"])
        self.count = 0
        self.sent: dict[str, dict[str, Any]] = {}

    def command(self, action: str, secret: str | None = None, **fields: Any) -> str:
        self.count += 1
        body = {"id": f"cmd-{self.count}-{time.monotonic_ns()}", "site": "test-site", "action": action,
                "user": "op1", "central": "Central One", "at": now_iso(), **fields}
        self.sent[str(body["id"])] = body
        self.publish(envelope(body, secret or self.secret))
        return str(body["id"])

    def publish(self, payload: bytes) -> None:
        self.link.client.publish(COMMANDS, payload, qos=1)

    def results(self, command_id: str) -> list[dict[str, Any]]:
        return [r for m in self.link.on(RESULTS) if (r := json.loads(m.payload))["id"] == command_id]

    async def result(self, command_id: str, count: int = 1) -> dict[str, Any]:
        results = await self.link.wait_for(lambda: (r := self.results(command_id)) and len(r) >= count and r,
                                           timeout=15, what=f"the result of {command_id}")
        return dict(results[-1])

    async def send(self, action: str, **fields: Any) -> dict[str, Any]:
        return await self.result(self.command(action, **fields))

    async def until_listening(self) -> None:
        """Until the daemon's subscription is in place: a harmless probe (an unknown event) sent again under
        the same id until it is answered (the id makes every copy after the first a replay)."""
        body = {"id": f"probe-{time.monotonic_ns()}", "site": "test-site", "action": "dismiss", "event_id": 999999,
                "user": "probe", "central": "Central One", "at": now_iso()}
        deadline = time.monotonic() + 15
        while not self.results(str(body["id"])):
            assert time.monotonic() < deadline, "the daemon never answered a command"
            self.publish(envelope(body, self.secret))
            with contextlib.suppress(AssertionError):
                await wait_until(lambda: self.results(str(body["id"])), timeout=1.0)


@pytest.fixture
def central(broker: Mosquitto) -> Iterator[Central]:
    station = Central(broker.port)
    yield station
    station.link.close()


def command_settings(port: int, **extra: Any) -> dict[str, Any]:
    return {"mqtt": {"enabled": True, "host": "127.0.0.1", "port": port, "commands": True,
                     "command_secret": SECRET, **extra},
            "video": {"enabled": False},
            "accounts": [merge(BASE_CONFIG["accounts"][0], {"action_plan": PLAN})]}


@asynccontextmanager
async def commands_daemon(make_config: Callable[..., Config], port: int, **extra: Any) -> AsyncIterator[Daemon]:
    async with running(make_config(**command_settings(port, **extra))) as services:
        daemon = Daemon(services)
        await daemon.add_user()
        yield daemon


async def an_event(daemon: Daemon, token: str) -> int:
    await daemon.send(sample(MAIL))
    await daemon.wait_idle()
    status, body = await daemon.api("GET", "/api/events?status=all", token)
    assert status == 200 and body["events"], body
    return int(body["events"][0]["id"])


def texts(audit: list[dict[str, Any]]) -> list[str]:
    return [entry["text"] for entry in audit]


# -- the envelope, checked before anything is applied -------------------------------------------------------


def test_read_command_refuses_forged_foreign_stale_and_future_commands() -> None:
    now = datetime.now(UTC)
    good = {"id": "c1", "site": "test-site", "action": "note", "alarm_id": 3, "user": "op", "central": "C",
            "at": now.isoformat(), "text": "hello"}
    command = read_command(envelope(good, SECRET), SECRET, "test-site", 3600, now)
    assert (command.id, command.action, command.alarm_id, command.args) == ("c1", "note", 3, {"text": "hello"})
    assert command.who == "op at C"
    cases = [
        (envelope(good, "another secret"), "bad signature"),
        (envelope({**good, "site": "other-site"}, SECRET), "is for site 'other-site'"),
        (envelope({**good, "at": (now - timedelta(hours=2)).isoformat()}, SECRET), "expired"),
        (envelope({**good, "at": (now + timedelta(minutes=6)).isoformat()}, SECRET), "in the future"),
        (envelope({**good, "action": "explode"}, SECRET), "unknown action"),
        (envelope({**good, "text": " "}, SECRET), "`text` is required"),
        (b"not json", "not JSON"),
    ]
    for payload, reason in cases:
        with pytest.raises(CommandRefused, match=reason):
            read_command(payload, SECRET, "test-site", 3600, now)
    # A signature over other text (the command altered after signing) is forged too.
    outer = json.loads(envelope(good, SECRET))
    outer["command"] = outer["command"].replace("hello", "bye")
    with pytest.raises(CommandRefused, match="bad signature") as refused:
        read_command(json.dumps(outer).encode(), SECRET, "test-site", 3600, now)
    assert refused.value.command_id == "c1"


def test_commands_need_a_secret(tmp_path: Path) -> None:
    from vmond.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="mqtt.commands: commands need `mqtt.command_secret`"):
        load_config(write_config(tmp_path, mqtt={"enabled": True, "commands": True}))
    secret_file = tmp_path / "command-secret"
    secret_file.write_text("from a file\n")
    config = load_config(write_config(tmp_path, mqtt={"commands": True, "command_secret_file": str(secret_file)}))
    secret = config.mqtt.read_command_secret()
    assert secret is not None and secret.reveal() == "from a file"
    assert config.mqtt.command_max_age == 3600


# -- against a running daemon ---------------------------------------------------------------------------------


async def test_every_action_is_applied_once_and_on_the_trail_as_the_central_operator(
        make_config: Callable[..., Config], broker: Mosquitto, central: Central) -> None:
    await central.link.ready()
    async with commands_daemon(make_config, broker.port) as daemon:
        token = await daemon.token()
        event_id = await an_event(daemon, token)
        await central.until_listening()

        result = await central.send("dismiss", event_id=event_id)
        assert result["ok"] is True and result["error"] is None and result["action"] == "dismiss"
        assert result["site"] == "test-site" and result["at"]
        status, event = await daemon.api("GET", f"/api/events/{event_id}", token)
        assert event["status"] == "dismissed"
        assert "op1 at Central One dismissed the event" in texts(event["audit"])
        remote = [e for e in event["audit"] if e["action"] == "event.dismissed"][0]
        assert remote["who"] is None and remote["detail"]["remote"]["user"] == "op1"
        assert remote["detail"]["remote"]["central"] == "Central One"

        assert (await central.send("restore", event_id=event_id))["ok"] is True
        _, event = await daemon.api("GET", f"/api/events/{event_id}", token)
        assert event["status"] == "active"

        assert (await central.send("alarm", event_id=event_id))["ok"] is True
        _, alarms = await daemon.api("GET", "/api/alarms?state=open", token)
        alarm_id = alarms["alarms"][0]["id"]
        _, alarm = await daemon.api("GET", f"/api/alarms/{alarm_id}", token)
        assert alarm["state"] == "acknowledged"
        assert alarm["opened_by"] == alarm["acknowledged_by"] == OPERATOR
        worded = set(texts(alarm["audit"]))
        assert {"op1 at Central One raised the alarm", "op1 at Central One is handling it"} <= worded

        refused = await central.send("acknowledge", alarm_id=alarm_id)
        assert refused["ok"] is False and "handled by op1 at Central One" in refused["error"]
        assert (await central.send("acknowledge", alarm_id=alarm_id, take_over=True))["ok"] is True

        note_id = central.command("note", alarm_id=alarm_id, text="keyholder on the way")
        assert (await central.result(note_id))["ok"] is True
        assert (await central.send("step", alarm_id=alarm_id, n=2, done=True))["ok"] is True
        assert "no step 7" in (await central.send("step", alarm_id=alarm_id, n=7, done=True))["error"]
        _, alarm = await daemon.api("GET", f"/api/alarms/{alarm_id}", token)
        assert [n["text"] for n in alarm["notes"]] == ["keyholder on the way"]
        assert alarm["steps"][1]["done_by"] == {"id": None, "username": "op1 at Central One"}
        assert alarm["steps"][0]["done_by"] is None
        assert "op1 at Central One added a note: keyholder on the way" in texts(alarm["audit"])

        no_code = await central.send("resolve", alarm_id=alarm_id, text="cat")
        assert no_code["ok"] is False and "code: required" in no_code["error"]
        assert (await central.send("resolve", alarm_id=alarm_id, code="false_alarm", text="a cat"))["ok"] is True
        _, alarm = await daemon.api("GET", f"/api/alarms/{alarm_id}", token)
        assert alarm["state"] == "resolved" and alarm["resolved_by"] == OPERATOR
        assert any(t.startswith("op1 at Central One resolved it as False alarm") for t in texts(alarm["audit"]))

        late = await central.send("note", alarm_id=alarm_id, text="too late")
        assert late["ok"] is False
        assert late["error"].startswith("resolved locally at ") and late["error"].endswith("by op1 at Central One")

        # The same note command again: answered with its first result, applied once.
        first = central.results(note_id)[0]
        central.publish(envelope(central.sent[note_id], SECRET))
        again = await central.result(note_id, count=2)
        assert again == first
        _, alarm = await daemon.api("GET", f"/api/alarms/{alarm_id}", token)
        assert [n["text"] for n in alarm["notes"]] == ["keyholder on the way"]

        # The central asks for the event's pictures: each file and its thumbnail come through the outbox.
        media = await central.send("media", event_id=event_id)
        assert media["ok"] is True and media["error"] is None, media
        status, event = await daemon.api("GET", f"/api/events/{event_id}", token)
        pictures = [image["id"] for image in event["images"]]
        assert pictures
        for picture in pictures:
            for topic in (f"{BASE}/media/{picture}", f"{BASE}/media/{picture}/thumbnail"):
                [message] = await central.link.wait_for(lambda topic=topic: central.link.on(topic), what=topic)
                assert message.payload[:3] == b"\xff\xd8\xff"  # JPEG bytes, as the file is
        assert "unknown media" in (await central.send("media", event_id=event_id, media_ids=[987654]))["error"]
        assert "unknown event" in (await central.send("dismiss", event_id=987654))["error"]

        # The changes went out as the usual messages too, as the schema describes them.
        alarm_messages = [json.loads(m.payload) for m in central.link.on(ALARMS)]
        assert [m["alarm"]["state"] for m in alarm_messages][-1] == "resolved"
        assert alarm_messages[-1]["alarm"]["resolved_by"] == OPERATOR
        for message in central.link.messages:
            if message.topic in (EVENTS, ALARMS):
                check_message(message.topic, json.loads(message.payload))


async def test_forged_foreign_stale_future_commands_are_refused_with_a_result(
        make_config: Callable[..., Config], broker: Mosquitto, central: Central) -> None:
    await central.link.ready()
    async with commands_daemon(make_config, broker.port) as daemon:
        token = await daemon.token()
        event_id = await an_event(daemon, token)
        await central.until_listening()
        forged = await central.result(central.command("dismiss", secret="guessed", event_id=event_id))
        assert forged["ok"] is False and "bad signature" in forged["error"]
        foreign = await central.result(central.command("dismiss", event_id=event_id, site="other-site"))
        assert "is for site 'other-site'" in foreign["error"]
        stale = await central.result(central.command("dismiss", event_id=event_id,
                                                     at=now_iso(-timedelta(hours=2))))
        assert "expired" in stale["error"]
        future = await central.result(central.command("dismiss", event_id=event_id,
                                                      at=now_iso(timedelta(minutes=10))))
        assert "in the future" in future["error"]
        _, event = await daemon.api("GET", f"/api/events/{event_id}", token)
        assert event["status"] == "active"
        assert not [e for e in event["audit"] if e["action"] == "event.dismissed"]


async def test_a_command_sent_while_the_daemon_is_stopped_is_applied_once_when_it_is_back(
        make_config: Callable[..., Config], broker: Mosquitto, central: Central) -> None:
    await central.link.ready()
    async with commands_daemon(make_config, broker.port) as daemon:
        token = await daemon.token()
        event_id = await an_event(daemon, token)
        await central.until_listening()  # the daemon's persistent session exists on the broker
    command_id = central.command("dismiss", event_id=event_id)
    async with running(make_config(**command_settings(broker.port))) as services:
        daemon = Daemon(services)
        assert (await central.result(command_id))["ok"] is True
        status, event = await daemon.api("GET", f"/api/events/{event_id}", await daemon.token())
        assert event["status"] == "dismissed"
        assert [e["text"] for e in event["audit"] if e["action"] == "event.dismissed"] == \
            ["op1 at Central One dismissed the event"]


def run_apart(coroutine: Coroutine[Any, Any, None]) -> None:
    """Runs ``coroutine`` on a loop of its own, closed after: asyncio.run would replace the current loop that
    pytest-asyncio set up and leave it unclosed (a ResourceWarning in a later test)."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(coroutine)
    finally:
        loop.close()


def test_kill_between_applying_and_acknowledging_does_not_apply_twice(tmp_path: Path, broker: Mosquitto) -> None:
    central = Central(broker.port)
    config = write_config(tmp_path, **command_settings(broker.port))
    try:
        assert central.link.connected.wait(10)
        with process_with_admin(tmp_path, config) as process:
            process.start()
            token = process.token()
            smtp_send(process.smtp_port, sample(MAIL), "camera-front@monitor.local")

            def events() -> list[dict[str, Any]]:
                return list(process.get("/api/events?status=all", token)[1]["events"])

            deadline = time.monotonic() + 15
            while not events():
                assert time.monotonic() < deadline, "the mail never became an event"
                time.sleep(0.05)
            event_id = events()[0]["id"]
            run_apart(central.until_listening())  # the session exists: commands wait for the daemon
            assert process.stop() == 0
            process.start(VMOND_CRASHPOINT="after_command_commit")
            command_id = central.command("alarm", event_id=event_id)
            assert process.wait_exit() == EXIT_CODE  # applied and committed; the broker had no PUBACK
            process.start()  # the broker delivers the command again: answered, not applied again
            token = process.token()
            deadline = time.monotonic() + 20
            while len(central.results(command_id)) < 2:
                assert time.monotonic() < deadline, central.results(command_id)
                time.sleep(0.05)
            first, again = central.results(command_id)[:2]
            assert first == again and first["ok"] is True
            alarms = process.get("/api/alarms?state=all", token)[1]["alarms"]
            assert len(alarms) == 1
            audit = process.get(f"/api/alarms/{alarms[0]['id']}", token)[1]["audit"]
            assert [e["action"] for e in audit if e["action"] in ("alarm.open", "alarm.acknowledge")] == \
                ["alarm.open", "alarm.acknowledge"]
            assert process.stop() == 0
    finally:
        central.link.close()


async def test_the_subscription_is_made_again_after_the_broker_lost_it(
        make_config: Callable[..., Config], broker: Mosquitto, central: Central) -> None:
    await central.link.ready()
    async with commands_daemon(make_config, broker.port) as daemon:
        token = await daemon.token()
        event_id = await an_event(daemon, token)
        await central.until_listening()
        await broker.astop()  # no persistence: the restarted broker knows no session and no subscription
        await broker.astart()
        await central.link.ready(timeout=15)
        await central.until_listening()  # answered only if vmond subscribed again when it reconnected
        assert (await central.send("dismiss", event_id=event_id))["ok"] is True
        _, event = await daemon.api("GET", f"/api/events/{event_id}", token)
        assert event["status"] == "dismissed"


async def test_remembered_ids_are_forgotten_after_command_max_age(daemon: Daemon) -> None:
    from vmond.store.models import RemoteCommand, utcnow
    from vmond.store.remote import forget_commands

    def remember() -> None:
        RemoteCommand.create(command_id="old", received_at=utcnow() - timedelta(hours=2), result="{}")
        RemoteCommand.create(command_id="new", received_at=utcnow() - timedelta(minutes=30), result="{}")
        # Received 62 minutes ago, stamped up to 5 minutes ahead: valid for 3 more minutes, so still remembered.
        RemoteCommand.create(command_id="ahead", received_at=utcnow() - timedelta(minutes=62), result="{}")

    await daemon.services.db.write(remember)
    assert await daemon.services.db.write(forget_commands, 3600.0) == 1
    left = await daemon.services.db.read(lambda: sorted(r.command_id for r in RemoteCommand.select()))
    assert left == ["ahead", "new"]


async def test_a_command_the_store_fails_on_is_answered_refused_not_lost(
        make_config: Callable[..., Config], broker: Mosquitto, central: Central,
        monkeypatch: pytest.MonkeyPatch) -> None:
    await central.link.ready()
    async with commands_daemon(make_config, broker.port) as daemon:
        token = await daemon.token()
        event_id = await an_event(daemon, token)
        await central.until_listening()

        def failing(*args: Any, **kwargs: Any) -> None:
            raise OSError("disk I/O error")

        original = remote._apply
        monkeypatch.setattr(remote, "_apply", failing)
        result = await central.send("dismiss", event_id=event_id)
        assert result["ok"] is False and "could not apply it (OSError)" in result["error"]
        monkeypatch.setattr(remote, "_apply", original)
        _, event = await daemon.api("GET", f"/api/events/{event_id}", token)
        assert event["status"] == "active"
        assert (await central.send("dismiss", event_id=event_id))["ok"] is True  # a new command id works
