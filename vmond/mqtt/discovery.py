"""Home Assistant MQTT discovery: each camera a device with an ``event`` and an ``image`` entity, plus the
appliance itself with a few sensors.

Config topics are ``<homeassistant_prefix>/<component>/vmond_<site>/<object>/config`` (retained); an empty
retained config removes an entity. Every entity is available while ``<prefix>/<site>/available`` says
``online`` (``offline`` and ``stopped`` both mean unavailable). The payloads are pure functions of the camera
list; :func:`vmond.store.cameras.active_camera_devices` reads that list (through ``db.read``).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vmond.store.cameras import active_camera_devices
from vmond.store.messages import Topics

if TYPE_CHECKING:
    from vmond.mqtt.client import Link
    from vmond.mqtt.state import BrokerState
    from vmond.store.db import Database

log = logging.getLogger(__name__)

# Home Assistant's event entity needs its event types up front; camera event names are free text, so each is
# put into one of these (first rule that matches; "alarm" when none does).
EVENT_TYPES = ("person", "vehicle", "face", "line_crossing", "intrusion", "motion", "tamper", "video_loss",
               "audio", "alarm")
_EVENT_RULES = (
    ("person", re.compile(r"person|human|people|pedestrian|body", re.I)),
    ("vehicle", re.compile(r"vehicle|\bcar\b", re.I)),
    ("face", re.compile(r"face", re.I)),
    ("line_crossing", re.compile(r"line|cross|tripwire", re.I)),
    ("intrusion", re.compile(r"intrusion|region|zone|perimeter", re.I)),
    ("motion", re.compile(r"motion|movement|\bmd\b|\bpir\b", re.I)),
    ("tamper", re.compile(r"tamper|cover|mask|defocus|blind", re.I)),
    ("video_loss", re.compile(r"video ?loss|signal ?loss", re.I)),
    ("audio", re.compile(r"audio|sound|noise", re.I)),
)


def event_kind(event_type: str) -> str:
    """The Home Assistant event type for a camera's free-text event name."""
    return next((kind for kind, rule in _EVENT_RULES if rule.search(event_type or "")), "alarm")


def ha_event_type(event: dict[str, Any]) -> str:
    """The event's own ``kind`` (one normalisation for the wall, the station and Home Assistant); for a kind
    of ``other``, Home Assistant's ``audio`` or ``alarm``."""
    kind = event.get("kind")
    if kind in EVENT_TYPES:
        return str(kind)
    return "audio" if event_kind(event.get("event_type") or "") == "audio" else "alarm"


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Discovery:
    topics: Topics
    prefix: str  # mqtt.homeassistant_prefix
    site_name: str
    version: str

    @property
    def node(self) -> str:
        return f"vmond_{self.topics.site}"

    @property
    def status_topic(self) -> str:
        """Home Assistant announces itself here (``online``) after a restart: then announce everything again."""
        return f"{self.prefix}/status"

    def _topic(self, component: str, object_id: str) -> str:
        return f"{self.prefix}/{component}/{self.node}/{object_id}/config"

    def _common(self) -> dict[str, Any]:
        return {
            "availability": [{"topic": self.topics.available,
                              "value_template": "{{ 'online' if value == 'online' else 'offline' }}"}],
            "origin": {"name": "vmond", "sw_version": self.version},
        }

    @property
    def _appliance(self) -> dict[str, Any]:
        return {"identifiers": [self.node], "name": self.site_name, "manufacturer": "vmond",
                "model": "Video alarm appliance", "sw_version": self.version}

    def appliance_topics(self) -> list[str]:
        return [self._topic("sensor", "outbox_depth"), self._topic("sensor", "disk_free")]

    def appliance_configs(self) -> list[tuple[str, bytes]]:
        common = {**self._common(), "device": self._appliance, "state_topic": self.topics.status,
                  "state_class": "measurement", "entity_category": "diagnostic"}
        outbox_topic, disk_topic = self.appliance_topics()
        return [
            (outbox_topic, _json({**common, "name": "MQTT outbox depth", "unique_id": f"{self.node}_outbox_depth",
                                  "value_template": "{{ value_json.outbox_depth }}",
                                  "unit_of_measurement": "messages", "icon": "mdi:tray-full"})),
            (disk_topic, _json({**common, "name": "Free disk space", "unique_id": f"{self.node}_disk_free",
                                "value_template": "{{ (value_json.disk_free_bytes / 1000000000) | round(2) }}",
                                "unit_of_measurement": "GB", "device_class": "data_size"})),
        ]

    def camera_topics(self, camera_id: int) -> list[str]:
        return [self._topic("event", f"camera_{camera_id}"), self._topic("image", f"camera_{camera_id}")]

    def camera_configs(self, camera_id: int, camera: dict[str, Any]) -> list[tuple[str, bytes]]:
        device = {"identifiers": [f"{self.node}_camera_{camera_id}"], "name": camera["name"],
                  "manufacturer": camera.get("vendor") or "camera", "via_device": self.node}
        common = {**self._common(), "device": device}
        event_topic, image_topic = self.camera_topics(camera_id)
        return [
            (event_topic, _json({**common, "name": "Alarm", "unique_id": f"{self.node}_camera_{camera_id}_alarm",
                                 "state_topic": self.topics.camera_event(camera_id),
                                 "event_types": list(EVENT_TYPES), "device_class": "motion"})),
            (image_topic, _json({**common, "name": "Snapshot",
                                 "unique_id": f"{self.node}_camera_{camera_id}_snapshot",
                                 "image_topic": self.topics.snapshot(camera_id), "content_type": "image/jpeg"})),
        ]

    @staticmethod
    def camera_event(message_id: str, event: dict[str, Any]) -> bytes:
        """The state message of a camera's event entity, for one new event."""
        return _json({"event_type": ha_event_type(event), "event_id": event["id"],
                      "message_id": message_id, "name": event.get("event_type"),
                      "camera_name": event.get("camera_name"), "channel": event.get("channel"),
                      "event_time": event.get("event_time"), "images": len(event.get("images") or [])})


class Announcer:
    """Keeps Home Assistant's view in step with the cameras: configs for active cameras and the appliance,
    empty configs for cameras that are gone; with discovery switched off, takes back what was announced."""

    def __init__(self, discovery: Discovery, enabled: bool, state: BrokerState, db: Database) -> None:
        self._discovery, self._enabled, self._state, self._db = discovery, enabled, state, db
        self.force = True  # announce everything (after a connect, or when Home Assistant came online)
        self._announced: dict[int, dict[str, Any]] = {}  # as announced on this connection

    async def announce(self, link: Link) -> bool:
        """Publish what changed; True if the remembered state changed."""
        discovery, state = self._discovery, self._state
        if not self._enabled:
            if not (state.announced or state.appliance_announced):
                return False
            for topic in [t for c in sorted(state.announced) for t in discovery.camera_topics(c)]:
                link.publish(topic, b"", retain=True)
            for topic in discovery.appliance_topics():
                link.publish(topic, b"", retain=True)
            state.announced, state.appliance_announced = set(), False
            return True
        cameras = await self._db.read(active_camera_devices)
        force, self.force = self.force, False
        if force or not state.appliance_announced:
            for topic, payload in discovery.appliance_configs():
                link.publish(topic, payload, retain=True)
        for camera, info in cameras.items():
            if force or self._announced.get(camera) != info:
                for topic, payload in discovery.camera_configs(camera, info):
                    link.publish(topic, payload, retain=True)
        for camera in sorted((state.announced | set(self._announced)) - set(cameras)):
            log.info("mqtt: camera %d is gone or retired: removing it from Home Assistant", camera)
            for topic in discovery.camera_topics(camera):
                link.publish(topic, b"", retain=True)
        self._announced = cameras
        if state.announced == set(cameras) and state.appliance_announced:
            return False
        state.announced, state.appliance_announced = set(cameras), True
        return True
