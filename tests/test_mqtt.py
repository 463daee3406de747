"""MQTT forwarding against a real mosquitto on loopback: events, availability, snapshots, outages, restarts."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, distinct, sample
from helpers import free_port, wait_until
from mosquitto import Mosquitto, Subscriber
from test_mqtt_schema import check_message

from vmond.config import Config
from vmond.daemon import running
from vmond.mqtt import forwarder as forwarder_module
from vmond.store import outbox
from vmond.store.events import media_for_download
from vmond.store.models import OutboxMessage, utcnow

BASE = "vmond/test-site"
EVENTS = f"{BASE}/events"
STATUS = f"{BASE}/status"
AVAILABLE = f"{BASE}/available"
MAIL = "hikvision-ipc-intrusion.eml"  # three pictures

pytestmark = pytest.mark.usefixtures("quick_mqtt")


@pytest.fixture
def subscribers() -> Iterator[Callable[..., Subscriber]]:
    made: list[Subscriber] = []

    def make(port: int, topics: list[str] | None = None, **kwargs: Any) -> Subscriber:
        made.append(Subscriber(port, topics or [f"{BASE}/#"], **kwargs))
        return made[-1]

    yield make
    for subscriber in made:
        subscriber.close()


def mqtt_settings(port: int, **extra: Any) -> dict[str, Any]:
    return {"enabled": True, "host": "127.0.0.1", "port": port, **extra}


@asynccontextmanager
async def mqtt_daemon(make_config: Callable[..., Config], port: int, **extra: Any) -> AsyncIterator[Daemon]:
    # Without clips: a finished clip is one more "update" message, at a moment of the encoder's choosing.
    async with running(make_config(mqtt=mqtt_settings(port, **extra), video={"enabled": False})) as services:
        yield Daemon(services)


def events_on(subscriber: Subscriber) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in subscriber.on(EVENTS)]


async def stored_picture(daemon: Daemon, media_id: int) -> bytes:
    media = await daemon.services.db.read(media_for_download, media_id)
    assert media is not None
    return await asyncio.to_thread(daemon.services.media.resolve(media["path"]).read_bytes)


async def outbox_rows(daemon: Daemon) -> list[dict[str, Any]]:
    def rows() -> list[dict[str, Any]]:
        return [{"id": r.id, "topic": r.topic, "message": json.loads(bytes(r.payload))}
                for r in OutboxMessage.select().order_by(OutboxMessage.id)]

    return await daemon.services.db.read(rows)


async def test_alarm_mail_becomes_an_events_message_with_snapshot_and_availability(
        make_config: Callable[..., Config], broker: Mosquitto, subscribers: Callable[..., Subscriber]) -> None:
    live = await subscribers(broker.port).ready()
    async with mqtt_daemon(make_config, broker.port) as daemon:
        await daemon.send(sample(MAIL))
        await daemon.wait_idle()
        message = (await live.wait_for(lambda: events_on(live), what="events message"))[0]
        await daemon.add_user()
        _, body = await daemon.api("GET", "/api/events", await daemon.token())
        event = body["events"][0]
        assert message["type"] == "new" and message["site"] == "test-site"
        assert message["id"].startswith("test-site:") and len(message["id"]) > 20
        assert message["event"]["id"] == event["id"] and message["event"]["camera"] == event["camera"]
        assert len(message["event"]["images"]) == 3 and "thumbnail" not in message["event"]
        assert "absolute_url" not in message["event"]["images"][0]  # only with web.public_url
        check_message(EVENTS, message)

        # The snapshot: the camera's latest picture, byte for byte, retained.
        snapshot_topic = f"{BASE}/cameras/{event['camera']['id']}/snapshot"
        snapshot = await live.wait_for(lambda: live.on(snapshot_topic), what="snapshot")
        assert snapshot[-1].payload == await stored_picture(daemon, event["images"][-1]["id"])
        assert snapshot[-1].payload[:3] == b"\xff\xd8\xff"

        late = await subscribers(broker.port).ready()  # joins afterwards: sees what is retained
        await late.wait_for(lambda: late.on(snapshot_topic) and late.on(AVAILABLE), what="retained messages")
        assert [(m.payload, m.retain) for m in late.on(AVAILABLE)] == [(b"online", True)]
        check_message(AVAILABLE, late.on(AVAILABLE)[0].payload.decode())
        assert late.on(snapshot_topic)[0].retain and late.on(snapshot_topic)[0].payload == snapshot[-1].payload
        assert not late.on(EVENTS)  # events are not retained

        status = await live.wait_for(lambda: live.on(f"{BASE}/status"), what="status")
        check_message(f"{BASE}/status", json.loads(status[-1].payload))

        async def health() -> dict[str, Any]:
            _, body = await daemon.api("GET", "/api/health", None)
            return body["mqtt"]

        await live.wait_for(lambda: daemon.services.mqtt.status()["outbox_depth"] == 0, what="empty outbox")
        mqtt = await health()
        assert mqtt["enabled"] and mqtt["connected"] and mqtt["outbox_depth"] == 0
        assert mqtt["dropped"] == 0 and mqtt["last_error"] is None and mqtt["oldest_undelivered_age_s"] is None

        # A dismissal is an update of the same event, with a message id of its own.
        status_code, _ = await daemon.api("POST", f"/api/events/{event['id']}/dismiss", await daemon.token())
        assert status_code == 200
        update = (await live.wait_for(lambda: [m for m in events_on(live) if m["event"]["status"] == "dismissed"],
                                      what="update"))[0]
        assert update["type"] == "update" and update["event"]["id"] == event["id"] and update["id"] != message["id"]
        check_message(EVENTS, update)
        # No new picture: the snapshot is not sent again. The other camera's alarm after it goes out later, its
        # snapshot after its event: once that snapshot is here, a resent one of the first camera would be too.
        await daemon.send(sample(MAIL), to="camera-back@monitor.local")
        back = (await live.wait_for(lambda: [m for m in events_on(live) if m["event"]["camera"]["name"] == "Back Yard"],
                                    what="the other camera's event"))[0]["event"]
        await live.wait_for(lambda: live.on(f"{BASE}/cameras/{back['camera']['id']}/snapshot"),
                            what="the other camera's snapshot")
        assert len(live.on(snapshot_topic)) == 1
    await live.wait_for(lambda: [m for m in live.on(AVAILABLE) if m.payload == b"stopped"], what="stopped")
    after = await subscribers(broker.port, [AVAILABLE]).ready()
    retained = await after.wait_for(lambda: after.on(AVAILABLE), what="retained availability")
    assert [(m.payload, m.retain) for m in retained] == [(b"stopped", True)]


async def test_broker_outage_loses_nothing_and_keeps_the_order(
        make_config: Callable[..., Config], tmp_path: Path, subscribers: Callable[..., Subscriber]) -> None:
    # Persistence and a persistent session let the test's subscriber get what was sent while it reconnected.
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()
    station = await subscribers(broker.port, [EVENTS], client_id="station", clean_session=False).ready()
    try:
        async with mqtt_daemon(make_config, broker.port) as daemon:
            await daemon.send(sample(MAIL))
            await station.wait_for(lambda: events_on(station), what="first event")
            await broker.astop()
            mails = ["amcrest-tamper.eml", "reolink-person.eml", "swann-nvr-human.eml", "nvr-fn3108xe-motion.eml"]
            for name in mails:
                await daemon.send(sample(name), to="camera-back@monitor.local")
            await daemon.wait_idle()
            rows = await outbox_rows(daemon)
            queued = [row["message"]["id"] for row in rows]
            assert [row["message"]["type"] for row in rows].count("new") == len(mails)
            mqtt = daemon.services.mqtt
            await station.wait_for(lambda: mqtt.status()["outbox_depth"] == len(queued), what="depth in status")
            assert not mqtt.status()["connected"] and mqtt.status()["oldest_undelivered_age_s"] >= 0
            await broker.astart()

            def all_arrived() -> list[str]:
                ids = [m["id"] for m in events_on(station)]
                return ids if set(queued) <= set(ids) else []

            ids = await station.wait_for(all_arrived, timeout=15, what="every queued message")
            first_seen = list(dict.fromkeys(ids))
            start = first_seen.index(queued[0])
            assert first_seen[start:start + len(queued)] == queued  # in order; duplicates may follow
            await station.wait_for(lambda: daemon.services.mqtt.status()["outbox_depth"] == 0, what="empty outbox")
            assert not await outbox_rows(daemon)
            # The snapshot of the camera that mailed during the outage made it too.
            back = f"{BASE}/cameras/2/snapshot"
            late = await subscribers(broker.port, [back]).ready()
            await late.wait_for(lambda: late.on(back), what="snapshot of camera-back")
    finally:
        broker.stop()


async def test_undelivered_rows_go_out_after_a_restart_with_the_same_ids(
        make_config: Callable[..., Config], tmp_path: Path, subscribers: Callable[..., Subscriber]) -> None:
    port = free_port()  # nothing listens there yet
    async with mqtt_daemon(make_config, port) as daemon:
        for _ in range(3):
            await daemon.send(sample("amcrest-tamper.eml"))
        await daemon.wait_idle()
        queued = [row["message"]["id"] for row in await outbox_rows(daemon) if row["topic"] == EVENTS]
        assert len(queued) == 3
        # why it is not connected, for the installer
        await wait_until(lambda: daemon.services.mqtt.status()["last_error"], what="the connection error")
    broker = Mosquitto(tmp_path / "broker")
    broker.port = port
    broker.start()
    try:
        station = await subscribers(port, [EVENTS]).ready()
        async with mqtt_daemon(make_config, port) as daemon:
            ids = await station.wait_for(lambda: [m["id"] for m in events_on(station)][:3], what="the queued rows")
            assert ids == queued
            await station.wait_for(lambda: daemon.services.mqtt.status()["outbox_depth"] == 0, what="empty outbox")
    finally:
        broker.stop()


async def test_embedded_thumbnail(make_config: Callable[..., Config], broker: Mosquitto,
                                  subscribers: Callable[..., Subscriber]) -> None:
    station = await subscribers(broker.port, [EVENTS]).ready()
    async with mqtt_daemon(make_config, broker.port, embed_thumbnail=True) as daemon:
        await daemon.send(sample(MAIL))
        message = (await station.wait_for(lambda: events_on(station), what="events message"))[0]
        check_message(EVENTS, message)
        thumbnail = message["event"]["thumbnail"]
        media = await daemon.services.db.read(media_for_download, message["event"]["images"][0]["id"])
        expected = daemon.services.media.resolve(media["thumb_path"]).read_bytes()
        assert thumbnail["content_type"] == "image/jpeg" and base64.b64decode(thumbnail["data"]) == expected


async def test_outbox_bounds_drop_the_oldest_loudly(make_config: Callable[..., Config],
                                                    caplog: pytest.LogCaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forwarder_module, "TRIM_INTERVAL", 0.05)
    caplog.set_level(logging.WARNING, logger="vmond.mqtt.forwarder")
    # No broker: everything stays queued.
    async with mqtt_daemon(make_config, free_port(), outbox_max_messages=2, outbox_max_age="60s") as daemon:
        mqtt = daemon.services.mqtt
        assert mqtt.limits == forwarder_module.OutboxLimits(2, 60.0)
        await daemon.services.db.write(lambda: OutboxMessage.create(
            topic=EVENTS, payload=b"{}", created_at=utcnow() - timedelta(seconds=120)))
        await wait_until(lambda: mqtt.dropped, what="a trim")
        assert mqtt.dropped == 1  # too old
        for n in range(5):
            await daemon.send(distinct(sample("amcrest-tamper.eml"), n))
        await daemon.wait_idle()
        await wait_until(lambda: mqtt.dropped >= 5, what="the trims")
        # and four beyond the size: the config message queued at the start and three events
        assert mqtt.dropped == 5 and mqtt.status()["dropped"] == 5
        assert len(await outbox_rows(daemon)) == 2
        warnings = [r.getMessage() for r in caplog.records
                    if r.levelno == logging.WARNING and "dropped" in r.getMessage()]
        assert warnings and "the central station will not get them" in warnings[-1]


class StallingBroker:
    """Just enough of an MQTT 3.1.1 broker to take a client's PUBLISHes and acknowledge them only when told."""

    def __init__(self) -> None:
        self.publishes: list[tuple[int, str, bytes, bytes]] = []  # (connection number, topic, payload, packet id)
        self.auto_ack = False
        self.connections = 0
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> StallingBroker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.drop()
        self._server.close()
        await self._server.wait_closed()

    def events(self, connection: int | None = None) -> list[int]:
        return [json.loads(p)["event"]["id"] for c, t, p, _ in self.publishes
                if t == EVENTS and connection in (None, c)]

    def statuses_after(self, event: int) -> int:
        """Status messages published after event *event*'s message. Each pass of the forwarder begins with one
        (with STATUS_INTERVAL shortened): after two, a whole pass ran since, and whatever it sent is here."""
        topics = [t for _, t, _, _ in self.publishes]
        position = next(i for i, (_, t, p, _) in enumerate(self.publishes)
                        if t == EVENTS and json.loads(p)["event"]["id"] == event)
        return topics[position:].count(STATUS)

    def ack_event(self, number: int) -> None:
        assert self._writer is not None
        pid = next(i for _, t, p, i in self.publishes if t == EVENTS and json.loads(p)["event"]["id"] == number)
        self._writer.write(b"\x40\x02" + pid)

    def drop(self) -> None:
        if self._writer is not None:
            self._writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection, self._writer = self.connections, writer
        try:
            while True:
                first = (await reader.readexactly(1))[0]
                length, shift = 0, 0
                while True:
                    byte = (await reader.readexactly(1))[0]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                body = await reader.readexactly(length)
                kind = first >> 4
                if kind == 1:  # CONNECT
                    writer.write(b"\x20\x02\x00\x00")
                elif kind == 3:  # PUBLISH
                    size = int.from_bytes(body[:2], "big")
                    topic, rest = body[2:2 + size].decode(), body[2 + size:]
                    pid = b""
                    if (first >> 1) & 3:
                        pid, rest = rest[:2], rest[2:]
                    self.publishes.append((connection, topic, rest, pid))
                    if pid and (self.auto_ack or topic != EVENTS):  # events wait to be told, the rest not
                        writer.write(b"\x40\x02" + pid)
                elif kind == 8:  # SUBSCRIBE
                    writer.write(b"\x90\x03" + body[:2] + b"\x01")
                elif kind == 12:  # PINGREQ
                    writer.write(b"\xd0\x00")
                elif kind == 14:  # DISCONNECT
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def queued_event(number: int) -> bytes:
    return json.dumps({"id": f"test-site:{number}", "type": "new", "site": "test-site",
                       "event": {"id": number, "images": []}}).encode()


async def test_in_flight_window_is_bounded_and_a_reconnect_resumes_from_the_oldest_undelivered(
        make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forwarder_module, "WINDOW", 4)
    monkeypatch.setattr(forwarder_module, "STATUS_INTERVAL", 0.01)  # a status message at the start of every pass
    async with StallingBroker() as broker, mqtt_daemon(make_config, broker.port) as daemon:
        mqtt = daemon.services.mqtt
        for number in range(1, 11):
            await daemon.services.db.write(outbox.enqueue, EVENTS, queued_event(number))
        mqtt.notify()
        await wait_until(lambda: len(broker.events()) >= 4)
        await wait_until(lambda: broker.statuses_after(4) >= 2, what="a whole pass of the forwarder")
        assert broker.events() == [1, 2, 3, 4] and mqtt.status()["in_flight"] == 4  # the window is full

        # The first PUBACK opens one slot: exactly one more goes out.
        broker.ack_event(1)
        await wait_until(lambda: len(broker.events()) >= 5)
        await wait_until(lambda: broker.statuses_after(5) >= 2, what="a whole pass of the forwarder")
        assert broker.events() == [1, 2, 3, 4, 5] and mqtt.max_in_flight == 4
        await wait_until(lambda: mqtt.status()["outbox_depth"] == 9)

        # The connection drops with 2..5 unacknowledged: the next connection starts again from 2, in order.
        broker.auto_ack = True
        broker.drop()
        await wait_until(lambda: mqtt.status()["outbox_depth"] == 0, timeout=10)
        assert broker.events(connection=2) == list(range(2, 11))
        assert mqtt.max_in_flight == 4 and mqtt.status()["connected"]


async def test_alarm_tickets_go_out_on_the_alarms_topic_in_order_with_the_events(
        make_config: Callable[..., Config], broker: Mosquitto, subscribers: Callable[..., Subscriber]) -> None:
    alarms_topic = f"{BASE}/alarms"
    station = await subscribers(broker.port, [EVENTS, alarms_topic]).ready()
    async with mqtt_daemon(make_config, broker.port) as daemon:
        await daemon.add_user()
        token = await daemon.token()
        await daemon.send(sample(MAIL))
        event = (await station.wait_for(lambda: events_on(station), what="events message"))[0]["event"]
        status, alarm = await daemon.api("POST", f"/api/events/{event['id']}/alarm", token)
        assert status == 201, alarm
        status, _ = await daemon.api("POST", f"/api/alarms/{alarm['id']}/resolve", token,
                                     json={"code": "false_alarm", "resolution": "a cat"})
        assert status == 200

        def resolved() -> list[dict[str, Any]]:
            alarms = [json.loads(m.payload) for m in station.on(alarms_topic)]
            return alarms if alarms and alarms[-1]["alarm"]["state"] == "resolved" else []

        alarms = await station.wait_for(resolved, what="the resolved alarm")
        for message in alarms:
            check_message(alarms_topic, message)
            assert message["alarm"]["id"] == alarm["id"]
        assert alarms[0]["type"] == "new" and alarms[-1]["type"] == "update"
        assert len({m["id"] for m in alarms}) == len(alarms)
        # One stream per site: the order on the wire is the order of the changes.
        sequence = [(m.topic, json.loads(m.payload)["type"]) for m in station.messages]
        assert sequence[0] == (EVENTS, "new") and sequence[-1] == (alarms_topic, "update")
        assert any(json.loads(m.payload)["event"]["status"] == "alarmed" for m in station.on(EVENTS))
