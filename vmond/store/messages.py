"""MQTT topic names and message payloads, as the interface contract fixes them.

| topic | retained | payload |
| ``<prefix>/<site>/available`` | yes | ``online`` / ``offline`` (last will) / ``stopped`` (clean stop) |
| ``<prefix>/<site>/events`` | no, QoS 1 | ``{"id", "type": "new"|"update", "event": Event}`` |
| ``<prefix>/<site>/alarms`` | no, QoS 1 | ``{"id", "type": "new"|"update", "alarm": Alarm}`` |
| ``<prefix>/<site>/cameras/<camera-id>/snapshot`` | yes | the latest JPEG |

Added by vmond beyond the contract:

| ``<prefix>/<site>/status`` | yes | ``{"outbox_depth", ..., "heartbeat_at"}`` (Home Assistant sensors) |
| ``<prefix>/<site>/media/<id>[/thumbnail]`` | no, QoS 1 | a media file's (thumbnail's) raw bytes |
| ``<prefix>/<site>/config`` | yes | ``{"site", "version", "at", "accounts", "cameras"}``: for a central station |
| ``<prefix>/<site>/cameras/<camera-id>/event`` | no | ``{"event_type": <kind>, ...}``: Home Assistant event entity |
| ``<prefix>/<site>/commands`` | in, QoS 1 | a signed command from a central station (:mod:`vmond.store.commands`) |
| ``<prefix>/<site>/commands/result`` | no, QoS 1 | ``{"id", "site", "action", "ok", "error", "at"}`` |
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
    public_url: str | None = None  # web.public_url: events then carry absolute media URLs beside the relative ones
    publish_media: str = "none"  # mqtt.publish_media: which media of a new event are published (issue 18)
    max_media_size: int = 4 * 10**6  # mqtt.max_media_size: larger files are not published

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

    @property
    def config(self) -> str:
        """Retained: the site, its accounts and cameras, as a central station mirrors them (issue 18)."""
        return f"{self.base}/config"

    def media(self, media_id: int, thumbnail: bool = False) -> str:
        """A media file's raw bytes (or its thumbnail's), for a central station (issue 18)."""
        return f"{self.base}/media/{media_id}" + ("/thumbnail" if thumbnail else "")

    def snapshot(self, camera_id: int) -> str:
        return f"{self.base}/cameras/{camera_id}/snapshot"

    def camera_event(self, camera_id: int) -> str:
        return f"{self.base}/cameras/{camera_id}/event"

    # Commands from a central station (issue 18): signed commands in, their results out.
    @property
    def commands(self) -> str:
        return f"{self.base}/commands"

    @property
    def command_results(self) -> str:
        return f"{self.base}/commands/result"


def outbox_topics(config: Config) -> Topics | None:
    """Where changes are reported, or None when MQTT is off (then nothing is queued)."""
    if not config.mqtt.enabled:
        return None
    return Topics(config.mqtt.topic_prefix, config.site.id, config.web.public_url, config.mqtt.publish_media,
                  config.mqtt.max_media_size)


def message_id(site: str) -> str:
    """Globally unique (site + random), fixed when the message is queued, so every retry carries the same id."""
    return f"{site}:{uuid.uuid4()}"


def event_payload(site: str, kind: str, event: dict[str, Any], public_url: str | None = None) -> bytes:
    """An ``events`` message; with *public_url*, its media URLs also absolute (the relative ones unchanged)."""
    event = with_uid(site, event)
    if public_url is not None:
        event = with_absolute_urls(event, public_url)
    return json.dumps({"id": message_id(site), "type": kind, "site": site, "event": event},
                      separators=(",", ":"), ensure_ascii=False).encode()


def with_absolute_urls(event: dict[str, Any], public_url: str) -> dict[str, Any]:
    """*event* with ``absolute_url`` beside each media ``url`` (``absolute_thumbnail_url`` beside
    ``thumbnail_url``): for a station that shows the pictures without knowing where the appliance is."""
    def absolute(path: str | None) -> str | None:
        return None if path is None else public_url + path

    video = event.get("video") or {}
    return {
        **event,
        "images": [{**image, "absolute_url": absolute(image["url"]),
                    "absolute_thumbnail_url": absolute(image["thumbnail_url"])} for image in event.get("images", [])],
        "video": {**video, "absolute_url": absolute(video.get("url"))},
        "attachments": [{**item, "absolute_url": absolute(item["url"])} for item in event.get("attachments", [])],
    }


def alarm_payload(site: str, kind: str, alarm: dict[str, Any]) -> bytes:
    return json.dumps({"id": message_id(site), "type": kind, "site": site, "alarm": with_uid(site, alarm)},
                      separators=(",", ":"), ensure_ascii=False).encode()


def object_uid(site: str, object_id: int) -> str:
    """An event's or alarm's id unique across sites (ids are unique only per appliance): ``<site>:<id>``."""
    return f"{site}:{object_id}"


def with_uid(site: str, item: dict[str, Any]) -> dict[str, Any]:
    """*item* (an Event or Alarm, and an Alarm's embedded Event) with its ``uid`` beside its ``id``, for a station
    that mirrors many sites."""
    if isinstance(item.get("event"), dict):
        item = {**item, "event": with_uid(site, item["event"])}
    return item if "id" not in item else {**item, "uid": object_uid(site, item["id"])}
