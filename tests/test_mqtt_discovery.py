"""Home Assistant MQTT discovery against a real mosquitto: configs per camera and for the appliance, announced
again when Home Assistant comes online, removed when a camera is retired or discovery is switched off."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from conftest import sample
from mosquitto import Mosquitto, Subscriber
from test_mqtt import BASE, MAIL, mqtt_daemon
from test_mqtt_schema import check_message

from vmond.config import Config
from vmond.mqtt.discovery import event_kind
from vmond.store.models import Camera

HA = "homeassistant"
NODE = "vmond_test-site"

pytestmark = pytest.mark.usefixtures("quick_mqtt")


@pytest.fixture
def ha(broker: Mosquitto) -> Iterator[Subscriber]:
    subscriber = Subscriber(broker.port, [f"{HA}/#", f"{BASE}/#"])
    yield subscriber
    subscriber.close()


def configs(subscriber: Subscriber) -> dict[str, list[bytes]]:
    seen: dict[str, list[bytes]] = {}
    for message in subscriber.messages:
        if message.topic.startswith(f"{HA}/") and message.topic.endswith("/config"):
            seen.setdefault(message.topic, []).append(message.payload)
    return seen


def camera_topics(camera_id: int) -> list[str]:
    return [f"{HA}/event/{NODE}/camera_{camera_id}/config", f"{HA}/image/{NODE}/camera_{camera_id}/config"]


SENSORS = [f"{HA}/sensor/{NODE}/outbox_depth/config", f"{HA}/sensor/{NODE}/disk_free/config"]


async def test_cameras_and_appliance_are_announced_updated_and_removed(
        make_config: Callable[..., Config], broker: Mosquitto, ha: Subscriber) -> None:
    await ha.ready()
    async with mqtt_daemon(make_config, broker.port, homeassistant_discovery=True) as daemon:
        expected = camera_topics(1) + camera_topics(2) + SENSORS
        await ha.wait_for(lambda: set(expected) <= set(configs(ha)), what="discovery configs")
        assert set(configs(ha)) == set(expected)
        announced = {topic: json.loads(payloads[-1]) for topic, payloads in configs(ha).items()}
        for topic, config in announced.items():
            check_message(topic, config)
            assert config["availability"][0]["topic"] == f"{BASE}/available"
        image = announced[camera_topics(1)[1]]
        assert image["image_topic"] == f"{BASE}/cameras/1/snapshot" and image["content_type"] == "image/jpeg"
        assert image["device"]["name"] == "Front Door" and image["device"]["via_device"] == NODE
        event = announced[camera_topics(1)[0]]
        assert event["state_topic"] == f"{BASE}/cameras/1/event" and "intrusion" in event["event_types"]
        depth = announced[SENSORS[0]]
        assert depth["state_topic"] == f"{BASE}/status" and "outbox_depth" in depth["value_template"]

        # An alarm fires the camera's event entity; its picture becomes the image entity's.
        await daemon.send(sample(MAIL))
        fired = await ha.wait_for(lambda: ha.on(f"{BASE}/cameras/1/event"), what="camera event")
        state = json.loads(fired[0].payload)
        check_message(f"{BASE}/cameras/1/event", state)
        assert state["event_type"] == "intrusion" and state["event_type"] in event["event_types"]
        await ha.wait_for(lambda: ha.on(f"{BASE}/cameras/1/snapshot"), what="snapshot")

        # Home Assistant restarted: everything is announced again.
        ha.client.publish(f"{HA}/status", b"online", qos=1)
        await ha.wait_for(lambda: all(len(configs(ha)[t]) >= 2 for t in expected), what="second announcement")

        # A retired camera is removed (empty retained config); the other stays.
        await daemon.services.db.write(lambda: Camera.update(active=False).where(Camera.id == 2).execute())
        daemon.services.mqtt.refresh_discovery()
        await ha.wait_for(lambda: all(configs(ha)[t][-1] == b"" for t in camera_topics(2)), what="removal")
        assert all(configs(ha)[t][-1] != b"" for t in camera_topics(1) + SENSORS)

    late = Subscriber(broker.port, [f"{HA}/#"])
    try:
        await late.ready()
        await late.wait_for(lambda: len(configs(late)) == 4, what="retained configs")
        assert set(configs(late)) == set(camera_topics(1) + SENSORS)  # camera 2 is gone from the broker
    finally:
        late.close()

    # Switched off, discovery takes back what it announced (remembered across the restart).
    async with mqtt_daemon(make_config, broker.port, homeassistant_discovery=False):
        await ha.wait_for(lambda: all(configs(ha)[t][-1] == b"" for t in camera_topics(1) + SENSORS),
                          what="everything removed")


@pytest.mark.parametrize(("name", "kind"), [
    ("Line Crossing", "line_crossing"), ("Intrusion Detection", "intrusion"), ("Motion Detection", "motion"),
    ("Human detected", "person"), ("Vehicle", "vehicle"), ("Video Tampering", "tamper"), ("Video Loss", "video_loss"),
    ("IPC Message", "alarm"), ("", "alarm"),
])
def test_event_kinds(name: str, kind: str) -> None:
    assert event_kind(name) == kind

