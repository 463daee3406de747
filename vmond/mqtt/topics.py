"""MQTT topic names and message payloads, as the interface contract fixes them.

| topic | retained | payload |
| ``<prefix>/<site>/available`` | yes | ``online`` / ``offline`` (last will) / ``stopped`` (clean stop) |
| ``<prefix>/<site>/events`` | no, QoS 1 | ``{"id", "type": "new"|"update", "event": Event}`` |
| ``<prefix>/<site>/alarms`` | no, QoS 1 | ``{"id", "type": "new"|"update", "alarm": Alarm}`` |
| ``<prefix>/<site>/cameras/<camera-id>/snapshot`` | yes | the latest JPEG |

Added by vmond beyond the contract:

| ``<prefix>/<site>/status`` | yes | ``{"outbox_depth", "disk_free_bytes", ...}`` (Home Assistant sensors) |
| ``<prefix>/<site>/cameras/<camera-id>/event`` | no | ``{"event_type": <kind>, ...}``: Home Assistant event entity |
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmond.config import Config


@dataclass(frozen=True)
class Topics:
    prefix: str
    site: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}"

    @property
    def available(self) -> str:
        return f"{self.base}/available"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def alarms(self) -> str:
        return f"{self.base}/alarms"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    def snapshot(self, camera_id: int) -> str:
        return f"{self.base}/cameras/{camera_id}/snapshot"

    def camera_event(self, camera_id: int) -> str:
        return f"{self.base}/cameras/{camera_id}/event"


def outbox_topics(config: Config) -> Topics | None:
    """Where changes are reported, or None when MQTT is off (then nothing is queued)."""
    return Topics(config.mqtt.topic_prefix, config.site.id) if config.mqtt.enabled else None


def message_id(site: str) -> str:
    """Globally unique (site + random), fixed when the message is queued, so every retry carries the same id."""
    return f"{site}:{uuid.uuid4()}"


def event_payload(site: str, kind: str, event: dict[str, Any]) -> bytes:
    return json.dumps({"id": message_id(site), "type": kind, "site": site, "event": event},
                      separators=(",", ":"), ensure_ascii=False).encode()


def alarm_payload(site: str, kind: str, alarm: dict[str, Any]) -> bytes:
    return json.dumps({"id": message_id(site), "type": kind, "site": site, "alarm": alarm},
                      separators=(",", ":"), ensure_ascii=False).encode()
