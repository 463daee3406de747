"""What a central station needs from an edge, against a real mosquitto: ids unique across sites, the heartbeat,
the retained config message."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE_CONFIG, Daemon, sample, write_config
from helpers import free_port
from mosquitto import Mosquitto, Subscriber
from test_mqtt import BASE, EVENTS, MAIL, STATUS, events_on, mqtt_daemon, mqtt_settings
from test_mqtt_schema import check_message

from vmond.config import Config
from vmond.daemon import running
from vmond.mqtt import forwarder as forwarder_module
from vmond.reload import reload_accounts
from vmond.store.events import media_for_download
from vmond.store.mediaout import queue_media
from vmond.store.models import OutboxMessage

ALARMS = f"{BASE}/alarms"
CONFIG = f"{BASE}/config"
SECRETS = ("tgram://bot123456:token-s3cret/987", "token-s3cret", "camera-pass-123", "rtsp-pass-456", "camera-front")

pytestmark = pytest.mark.usefixtures("quick_mqtt")


@pytest.fixture
def station(broker: Mosquitto) -> Iterator[Subscriber]:
    subscriber = Subscriber(broker.port, [f"{BASE}/#"])
    yield subscriber
    subscriber.close()


async def test_events_and_alarms_carry_an_id_unique_across_sites(
        make_config: Callable[..., Config], broker: Mosquitto, station: Subscriber) -> None:
    await station.ready()
    async with mqtt_daemon(make_config, broker.port) as daemon:
        await daemon.add_user()
        token = await daemon.token()
        await daemon.send(sample(MAIL))
        message = (await station.wait_for(lambda: events_on(station), what="events message"))[0]
        event = message["event"]
        assert event["uid"] == f"test-site:{event['id']}"
        check_message(EVENTS, message)
        status, alarm = await daemon.api("POST", f"/api/events/{event['id']}/alarm", token)
        assert status == 201, alarm
        assert "uid" not in alarm  # the appliance's own API is unchanged: its ids are unique there
        alarms = await station.wait_for(lambda: [json.loads(m.payload) for m in station.on(ALARMS)], what="alarm")
        assert alarms[0]["alarm"]["uid"] == f"test-site:{alarm['id']}"
        if isinstance(alarms[0]["alarm"].get("event"), dict):
            assert alarms[0]["alarm"]["event"]["uid"] == event["uid"]
        check_message(ALARMS, alarms[0])


async def test_the_status_is_a_retained_heartbeat(make_config: Callable[..., Config], broker: Mosquitto,
                                                  station: Subscriber, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forwarder_module, "STATUS_INTERVAL", 0.3)
    await station.ready()
    async with mqtt_daemon(make_config, broker.port):
        def beats() -> list[dict[str, Any]]:
            found = [json.loads(m.payload) for m in station.on(STATUS)]
            return found if len({beat["heartbeat_at"] for beat in found}) >= 3 else []

        found = await station.wait_for(beats, what="three heartbeats")
        times = [datetime.fromisoformat(beat["heartbeat_at"]) for beat in found]
        assert times == sorted(times) and times[0] < times[-1]
        for beat in found:
            check_message(STATUS, beat)
        late = await Subscriber(broker.port, [STATUS]).ready()  # a central that starts later sees the last one
        try:
            retained = await late.wait_for(lambda: late.on(STATUS), what="the retained status")
            assert retained[0].retain and "heartbeat_at" in json.loads(retained[0].payload)
        finally:
            late.close()



def secret_accounts(*extra_cameras: dict[str, Any]) -> list[dict[str, Any]]:
    """The test account with a contact's notification URL, a camera's SMTP password and RTSP URL: secrets."""
    account = dict(BASE_CONFIG["accounts"][0])
    account["contacts"] = [{"name": "Jane Keyholder", "phone": "+15550100", "role": "keyholder", "priority": 1,
                            "notify_url": SECRETS[0]}]
    account["cameras"] = [{"name": "Front Door", "smtp_address": "camera-front", "smtp_password": "camera-pass-123",
                           "rtsp_url": "rtsp://admin:rtsp-pass-456@10.0.0.2/stream"},
                          {"name": "Back Yard", "smtp_address": "camera-back", "max_silence": "2h"}, *extra_cameras]
    return [account]


async def retained_config(port: int, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The config message as a station that subscribes now gets it (retained), once it is the *wanted* one."""
    async def newest() -> dict[str, Any]:
        late = await Subscriber(port, [CONFIG]).ready()
        try:
            message = (await late.wait_for(lambda: late.on(CONFIG), what="the retained config"))[0]
        finally:
            late.close()
        assert message.retain
        return dict(json.loads(message.payload))

    deadline = asyncio.get_running_loop().time() + 10
    while not wanted(config := await newest()):
        assert asyncio.get_running_loop().time() < deadline, f"the retained config is still {config}"
        await asyncio.sleep(0.1)
    return config


def account_names(config: dict[str, Any]) -> list[str]:
    return [account["name"] for account in config["accounts"]]


async def test_the_retained_config_mirrors_accounts_and_cameras_without_secrets(
        make_config: Callable[..., Config], broker: Mosquitto, station: Subscriber, tmp_path: Path) -> None:
    await station.ready()
    settings = {"mqtt": mqtt_settings(broker.port), "video": {"enabled": False},
                "site": {"id": "test-site", "name": "Test Site", "timezone": "Europe/Berlin"}}
    async with running(make_config(accounts=secret_accounts(), **settings)) as services:
        daemon = Daemon(services)
        config = await retained_config(broker.port, lambda c: True)
        check_message(CONFIG, config)
        assert config["site"] == {"id": "test-site", "name": "Test Site", "timezone": "Europe/Berlin"}
        assert config["version"] and account_names(config) == ["Test Customer"]
        account = config["accounts"][0]
        assert account["address"] == "1 Test Street" and account["monitoring"]["monitored"]
        assert account["contacts"] == [{"name": "Jane Keyholder", "phone": "+15550100", "email": None,
                                        "role": "keyholder", "priority": 1}]
        cameras = {camera["name"]: camera for camera in config["cameras"]}
        assert set(cameras) == {"Front Door", "Back Yard"}
        assert cameras["Back Yard"]["max_silence"] == 7200 and cameras["Front Door"]["active"]
        assert all(camera["account_id"] == account["id"] and not camera["snoozed"] for camera in cameras.values())
        for message in station.on(CONFIG):
            assert not [secret for secret in SECRETS if secret.encode() in message.payload]

        # A change over the API: a new account, a snoozed camera.
        await daemon.add_user()
        token = await daemon.token()
        status, created = await daemon.api("POST", "/api/accounts", token, json={"name": "Second Customer"})
        assert status == 201, created
        config = await retained_config(broker.port, lambda c: "Second Customer" in account_names(c))
        check_message(CONFIG, config)
        front = cameras["Front Door"]["id"]
        status, _ = await daemon.api("POST", f"/api/cameras/{front}/snooze", token, json={"until": "2h"})
        assert status == 200
        config = await retained_config(broker.port, lambda c: any(cam["snoozed"] for cam in c["cameras"]))
        assert [cam["name"] for cam in config["cameras"] if cam["snoozed"]] == ["Front Door"]
        assert config["cameras"][0]["snoozed_until"] is not None

        # A reload (SIGHUP) with a camera more in the file.
        write_config(tmp_path, accounts=secret_accounts({"name": "Side Gate", "smtp_address": "camera-gate"}),
                     **settings)
        assert "reloaded" in await reload_accounts(daemon.services)
        config = await retained_config(broker.port, lambda c: "Side Gate" in {cam["name"] for cam in c["cameras"]})
        check_message(CONFIG, config)
        for message in station.on(CONFIG):
            assert not [secret for secret in SECRETS if secret.encode() in message.payload]
            check_message(CONFIG, json.loads(message.payload))


async def test_one_config_message_waits_in_the_outbox_at_most(make_config: Callable[..., Config]) -> None:
    async with mqtt_daemon(make_config, free_port()) as daemon:  # no broker: everything stays queued
        await daemon.add_user()
        token = await daemon.token()
        for name in ("Second Customer", "Third Customer"):
            status, _ = await daemon.api("POST", "/api/accounts", token, json={"name": name})
            assert status == 201

        def configs() -> list[dict[str, Any]]:
            return [json.loads(bytes(r.payload)) for r in OutboxMessage.select().where(OutboxMessage.topic == CONFIG)]

        queued = await daemon.services.db.read(configs)
        assert len(queued) == 1 and account_names(queued[0]) == ["Test Customer", "Second Customer", "Third Customer"]


MEDIA = f"{BASE}/media/#"


def media_topics(station: Subscriber) -> dict[str, bytes]:
    return {m.topic: m.payload for m in station.messages if m.topic.startswith(f"{BASE}/media/")}


async def stored(daemon: Daemon, media_id: int, thumbnail: bool = False) -> bytes:
    media = await daemon.services.db.read(media_for_download, media_id)
    assert media is not None
    path = media["thumb_path"] if thumbnail else media["path"]
    return await asyncio.to_thread(daemon.services.media.resolve(path).read_bytes)


@pytest.mark.parametrize("mode", ["none", "thumbnails", "pictures", "all"])
async def test_media_are_published_per_mode_byte_for_byte(make_config: Callable[..., Config], broker: Mosquitto,
                                                          mode: str) -> None:
    station = await Subscriber(broker.port, [EVENTS, MEDIA]).ready()
    try:
        async with mqtt_daemon(make_config, broker.port, publish_media=mode) as daemon:
            await daemon.send(sample(MAIL))
            event = (await station.wait_for(lambda: events_on(station), what="events message"))[0]["event"]
            await station.wait_for(lambda: daemon.services.mqtt.status()["outbox_depth"] == 0, what="empty outbox")
            images = [image["id"] for image in event["images"]]
            assert len(images) == 3
            expected = {}
            if mode != "none":
                expected = {f"{BASE}/media/{i}/thumbnail": await stored(daemon, i, thumbnail=True) for i in images}
            if mode in ("pictures", "all"):
                expected |= {f"{BASE}/media/{i}": await stored(daemon, i) for i in images}
            await station.wait_for(lambda: len(media_topics(station)) >= len(expected), what="the media")
            assert media_topics(station) == expected
            assert all(not m.retain for m in station.messages)
            # The event message came first: it says what the media are.
            assert station.messages[0].topic == EVENTS
    finally:
        station.close()


async def test_media_beyond_the_size_bound_are_not_published(make_config: Callable[..., Config],
                                                             broker: Mosquitto) -> None:
    station = await Subscriber(broker.port, [EVENTS, MEDIA]).ready()
    try:
        async with mqtt_daemon(make_config, broker.port, publish_media="pictures", max_media_size="2KB") as daemon:
            await daemon.send(sample(MAIL))
            event = (await station.wait_for(lambda: events_on(station), what="events message"))[0]["event"]
            await station.wait_for(lambda: daemon.services.mqtt.status()["outbox_depth"] == 0, what="empty outbox")
            images = [image["id"] for image in event["images"]]
            sizes = {i: len(await stored(daemon, i)) for i in images}
            assert all(size > 2000 for size in sizes.values())  # the sample's pictures are all larger
            thumbs = {f"{BASE}/media/{i}/thumbnail": await stored(daemon, i, thumbnail=True) for i in images}
            small = {topic: data for topic, data in thumbs.items() if len(data) <= 2000}
            await station.wait_for(lambda: len(media_topics(station)) >= len(small), what="the small thumbnails")
            assert media_topics(station) == small
            # Asked for (the media command): the caller is told which were too large.
            result = await daemon.services.changes.record(lambda change: queue_media(change, images))
            assert result.too_large == images and result.unknown == []
            result = await daemon.services.changes.record(lambda change: queue_media(change, [images[0], 999999]))
            assert result.unknown == [999999]
    finally:
        station.close()


async def test_a_media_file_removed_before_sending_is_skipped(make_config: Callable[..., Config],
                                                             tmp_path: Path) -> None:
    port = free_port()  # no broker yet: the media wait in the outbox
    broker = Mosquitto(tmp_path / "broker")
    broker.port = port
    try:
        async with mqtt_daemon(make_config, port, publish_media="pictures") as daemon:
            await daemon.send(sample(MAIL))
            await daemon.wait_idle()
            rows = await daemon.services.db.read(lambda: [
                (r.topic, bytes(r.payload)) for r in OutboxMessage.select().order_by(OutboxMessage.id)])
            references = [payload for topic, payload in rows if topic.startswith(f"{BASE}/media/")]
            assert len(references) == 6 and all(len(payload) < 100 for payload in references)  # no file in a row
            images = sorted({json.loads(payload)["media_id"] for payload in references})
            gone = await daemon.services.db.read(media_for_download, images[0])
            await asyncio.to_thread(daemon.services.media.resolve(gone["path"]).unlink)  # retention, say
            broker.start()
            station = await Subscriber(port, [EVENTS, MEDIA]).ready()
            try:
                await station.wait_for(lambda: daemon.services.mqtt.status()["outbox_depth"] == 0,
                                       what="empty outbox")
                await station.wait_for(lambda: len(media_topics(station)) >= 5, what="the other media")
                sent = media_topics(station)
                assert f"{BASE}/media/{images[0]}" not in sent and len(sent) == 5
                assert sent[f"{BASE}/media/{images[1]}"] == await stored(daemon, images[1])
                assert daemon.services.mqtt.dropped == 0
            finally:
                station.close()
    finally:
        broker.stop()


async def test_with_all_the_clip_follows_when_it_is_made(make_config: Callable[..., Config],
                                                         broker: Mosquitto) -> None:
    station = await Subscriber(broker.port, [EVENTS, MEDIA]).ready()
    try:
        async with running(make_config(mqtt=mqtt_settings(broker.port, publish_media="all"))) as services:
            daemon = Daemon(services)
            await daemon.send(sample(MAIL))

            def clip() -> list[dict[str, Any]]:
                return [m["event"]["video"] for m in events_on(station) if m["event"]["video"]["state"] == "ready"]

            video = (await station.wait_for(clip, what="the clip's update", timeout=60))[0]
            topic = f"{BASE}/media/{video['url'].rsplit('/', 1)[-1]}"
            sent = await station.wait_for(lambda: station.on(topic), what="the clip", timeout=20)
            assert sent[0].payload[4:8] == b"ftyp"
            assert sent[0].payload == await stored(daemon, int(topic.rsplit("/", 1)[-1]))
    finally:
        station.close()
