"""The central benchmark's fake sites: edge messages made by vmond's own code, published for N sites at once.

A template site is recorded once, in a scratch SQLite database, by the store functions a real appliance runs: an
account with contacts and an action plan, its cameras, a camera mail with two pictures, an alarm raised on it, and
the retained config message. What those functions queue in the outbox is exactly what an edge publishes; the bench
takes the Event, the Alarm and the config body from there and only changes what differs per message (ids, times,
camera, subject), then words each message with :mod:`vmond.store.messages` (``event_payload``, ``alarm_payload``),
so the payloads cannot drift from the edge's. The status heartbeat is worded as the forwarder does
(``vmond.mqtt.forwarder.Forwarder._publish_status``).

The sites share a few publishing connections (the broker does not care who publishes a topic; a central only sees
the topics), and one connection answers the commands of every site: it checks each envelope with
:func:`vmond.store.commands.read_command`, the edge's own check, and publishes the result as the edge words it
(:func:`vmond.store.remote.result_payload`), followed by the event's update message for a command that changed it.
"""

from __future__ import annotations

import copy
import itertools
import json
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import vmond  # noqa: E402
from vmond.mqtt.client import paho_client  # noqa: E402
from vmond.store.accounts import save_account, save_camera  # noqa: E402
from vmond.store.alarms import raise_alarm  # noqa: E402
from vmond.store.changes import Change  # noqa: E402
from vmond.store.commands import CommandRefused, read_command  # noqa: E402
from vmond.store.db import open_sqlite  # noqa: E402
from vmond.store.events import IngestRecord, MediaRecord, record_mail  # noqa: E402
from vmond.store.messages import Topics, alarm_payload, event_payload  # noqa: E402
from vmond.store.models import OutboxMessage, utcnow  # noqa: E402
from vmond.store.remote import result_payload  # noqa: E402
from vmond.store.siteconfig import queue_config  # noqa: E402

DOMAIN = "monitor.local"
PREFIX = "vmond"  # the sites' mqtt.topic_prefix
TEMPLATE_SITE = "template"
COMMAND_MAX_AGE = 3600.0  # seconds: the edge's default mqtt.command_max_age
MAX_INFLIGHT = 200  # QoS 1 messages a publishing connection has unacknowledged (paho's default is 20)
CONNECT_TIMEOUT = 30.0


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def site_id(index: int) -> str:
    return f"bench-site-{index:04d}"


@dataclass(frozen=True)
class Template:
    """What the template site's store functions queued: the Event, the Alarm and the config body."""

    event: dict[str, Any]
    alarm: dict[str, Any]
    config: dict[str, Any]
    cameras: list[dict[str, Any]]  # the Event's camera objects, one per camera
    account: dict[str, Any]


def record_template(folder: Path, cameras: int) -> Template:
    """Run the store functions of an appliance once and keep what they queued for the broker."""
    db = open_sqlite(folder / "template.db")
    try:
        with db.atomic():
            change = Change(Topics("vmond", TEMPLATE_SITE))
            account = save_account(DOMAIN, {
                "name": "Bench Ltd", "address": "1 Bench Street", "notes": "a key safe at the back door",
                "contacts": [{"name": "Key holder", "phone": "+44 20 7946 0001", "role": "owner"},
                             {"name": "Manager", "email": "manager@bench.example", "role": "manager"}],
                "action_plan": [{"text": "Look at the pictures", "kinds": []},
                                {"text": "Call the key holder", "kinds": ["person", "intrusion"]}]}, None)
            camera_rows = [save_camera(DOMAIN, {"name": f"Camera {n + 1}", "account_id": account["id"]}, None)
                           for n in range(cameras)]
            pictures = tuple(MediaRecord(kind="image", path=f"template/{n}.jpg", content_type="image/jpeg",
                                         sha256="0" * 64, bytes=265_000, thumb_path=f"template/{n}.thumb.jpg",
                                         width=1920, height=1080) for n in range(2))
            at = utcnow()
            result = record_mail(DOMAIN, IngestRecord(
                ingest_key="template-1", local_part=camera_rows[0]["smtp_address"].split("@")[0], received_at=at,
                event_time=at, event_type="Motion Detection", subject="Motion Detection", channel="1",
                camera_name="CAM01", vendor="hikvision", media=pictures), 0.0, change)
            raise_alarm(DOMAIN, result.event["id"], None, change)
            queue_config({"id": TEMPLATE_SITE, "name": "Template", "timezone": "Europe/London"}, change)
            queued = [(row.topic, json.loads(bytes(row.payload))) for row in OutboxMessage.select()
                      .order_by(OutboxMessage.id)]
    finally:
        db.close()
    event = next(body["event"] for topic, body in queued if topic.endswith("/events") and body["type"] == "new")
    alarm = next(body["alarm"] for topic, body in queued if topic.endswith("/alarms"))
    config = next(body for topic, body in queued if topic.endswith("/config"))
    # the Event's camera object, as the template event has it, for each camera
    cameras = [{key: row[key] for key in event["camera"]} for row in camera_rows]
    return Template(event=event, alarm=alarm, config=config, account=event["account"], cameras=cameras)


def _retarget_media(event: dict[str, Any], next_media_id: Callable[[], int]) -> dict[str, Any]:
    """The template's media entries with this site's next media ids (urls follow the ids)."""
    images = []
    for image in event.get("images", []):
        media_id = next_media_id()
        images.append({**image, "id": media_id, "url": f"/media/{media_id}",
                       "thumbnail_url": f"/media/{media_id}/thumbnail"})
    return {**event, "images": images}


@dataclass
class Site:
    """One impersonated appliance: its topics, its id counters and the events it has published."""

    index: int
    topics: Topics
    template: Template
    events: dict[int, dict[str, Any]] = field(default_factory=dict)  # edge event id -> the newest Event sent
    _event_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _media_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _alarm_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def id(self) -> str:
        return self.topics.site

    def config_payload(self) -> bytes:
        body = {**self.template.config, "at": now_iso(),
                "site": {**self.template.config["site"], "id": self.id, "name": f"Bench site {self.index}"}}
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    def status_payload(self) -> bytes:
        at = now_iso()
        body = {"outbox_depth": 0, "oldest_undelivered_age_s": None, "dropped": 0, "disk_free_bytes": 20 * 10**9,
                "disk_total_bytes": 32 * 10**9, "version": vmond.__version__, "at": at, "heartbeat_at": at}
        return json.dumps(body, separators=(",", ":")).encode()

    def new_event(self, token: str, rng: random.Random) -> tuple[int, bytes]:
        """A new event on one of the site's cameras, *token* in its subject (how the bench finds it on the
        central's WebSocket); returns its edge id and the ``events`` payload."""
        event_id = next(self._event_ids)
        camera = rng.choice(self.template.cameras)
        at = now_iso()
        event = {key: value for key, value in self.template.event.items() if key != "uid"}
        event = _retarget_media(event, lambda: next(self._media_ids))
        event.update(id=event_id, camera=camera, received_at=at, updated_at=at, event_time=at,
                     subject=f"{token} Motion Detection", camera_name=camera["name"].upper().replace(" ", ""))
        self.events[event_id] = event
        return event_id, event_payload(self.id, "new", event)

    def updated_event(self, event_id: int, **changes: Any) -> bytes:
        event = {**self.events[event_id], **changes, "updated_at": now_iso()}
        self.events[event_id] = event
        return event_payload(self.id, "update", event)

    def new_alarm(self, event_id: int) -> tuple[bytes, bytes]:
        """A guard at the site raises the event's alarm: the event's update, then the alarm's ``new``."""
        update = self.updated_event(event_id, status="alarmed")
        event = self.events[event_id]
        alarm = {key: value for key, value in copy.deepcopy(self.template.alarm).items() if key != "uid"}
        at = now_iso()
        alarm.update(id=next(self._alarm_ids), event_id=event_id, opened_at=at, received_at=event["received_at"],
                     event_time=event["event_time"], camera_name=event["camera_name"],
                     camera={key: event["camera"][key] for key in alarm["camera"]},
                     last_action={"action": "alarm.open", "detail": {"event_id": event_id}})
        return update, alarm_payload(self.id, "new", alarm)


class Publisher:
    """One paho connection publishing for many sites (QoS 1, paho's own network thread); counts the PUBACKs."""

    def __init__(self, port: int, client_id: str) -> None:
        self.sent = self.acked = 0
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self.client = paho_client(client_id)
        self.client.max_inflight_messages_set(MAX_INFLIGHT)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = lambda *args: self.connected.set()
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port, keepalive=60)
        self.client.loop_start()

    def _on_publish(self, *args: Any) -> None:
        with self._lock:
            self.acked += 1

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        with self._lock:
            self.sent += 1
        self.client.publish(topic, payload, qos=1, retain=retain)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class CommandSeen:
    """A command the fake sites received: when, what it said, and what they answered."""

    at: float  # perf_counter when it arrived
    site: str
    command: dict[str, Any] | None
    ok: bool
    error: str | None


class CommandResponder:
    """Every site's end of ``<prefix>/<site>/commands``: checks the signature, time and site as an edge does,
    applies ``dismiss`` to the site's own idea of the event, and answers on ``.../commands/result``."""

    def __init__(self, port: int, prefix: str, sites: dict[str, Site], secret: str,
                 on_command: Callable[[CommandSeen], None], lock: threading.Lock) -> None:
        self.prefix = prefix
        self.lock = lock  # the sites' events change here and in the publishing threads
        self.sites = sites
        self.secret = secret
        self.on_command = on_command
        self.seen_ids: dict[str, bytes] = {}  # command id -> the result sent (a repeat is answered again)
        self.subscribed = threading.Event()
        self.client = paho_client("bench-sites-commands")
        self.client.max_inflight_messages_set(MAX_INFLIGHT)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=60)
        self.client.loop_start()

    def _on_connect(self, client: Any, *args: Any) -> None:
        client.subscribe(f"{self.prefix}/+/commands", qos=1)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        arrived = time.perf_counter()
        site_key = message.topic.split("/")[-2]
        site = self.sites.get(site_key)
        if site is None:
            return
        body = None
        try:
            command = read_command(bytes(message.payload), self.secret, site_key, COMMAND_MAX_AGE, datetime.now(UTC))
        except CommandRefused as exc:
            ok, error, command_id, action = False, exc.error, exc.command_id, exc.action
        else:
            body = json.loads(json.loads(message.payload)["command"])
            command_id, action = command.id, command.action
            with self.lock:
                error = self._refusal(site, command.action, command.event_id)
            ok = error is None
        self.on_command(CommandSeen(arrived, site_key, body, ok, error))
        if command_id is None:
            return
        if command_id in self.seen_ids:  # a repeat: answered again, applied once
            client.publish(site.topics.command_results, self.seen_ids[command_id], qos=1)
            return
        result = result_payload(site_key, command_id, action, error, datetime.now(UTC))
        self.seen_ids[command_id] = result
        # an edge's result and the change's own messages go out together, in order
        client.publish(site.topics.command_results, result, qos=1)
        with self.lock:
            if not ok or body is None or site.events[body["event_id"]]["status"] == "dismissed":
                return
            update = site.updated_event(body["event_id"], status="dismissed")
        client.publish(site.topics.events, update, qos=1)

    @staticmethod
    def _refusal(site: Site, action: str, event_id: int | None) -> str | None:
        """None when the fake site can do it; else the error an edge would answer."""
        if action != "dismiss":
            return f"the bench's sites answer dismiss only, not {action}"
        if event_id not in site.events:
            return f"no event {event_id}"
        if site.events[event_id]["status"] == "alarmed":  # vmond.store.events.set_status's words
            return f"event {event_id} is an alarm; work it on the alarm page"
        return None  # dismissing a dismissed event is harmless, as on an edge

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Fleet:
    """The N impersonated sites on a few publishing connections, and their commands' responder."""

    def __init__(self, port: int, sites: int, cameras: int, connections: int, secret: str, scratch: Path,
                 seed: int, thumbnail: bytes | None = None) -> None:
        template = record_template(scratch, cameras)
        self.sites = [Site(index, Topics(PREFIX, site_id(index)), template) for index in range(sites)]
        self.by_id = {site.id: site for site in self.sites}
        self.publishers = [Publisher(port, f"bench-sites-{n}") for n in range(connections)]
        for publisher in self.publishers:
            if not publisher.connected.wait(CONNECT_TIMEOUT):
                raise RuntimeError("a publishing connection did not connect")
        self.commands: list[CommandSeen] = []
        self._lock = threading.Lock()
        self.responder = CommandResponder(port, PREFIX, self.by_id, secret, self.commands.append, self._lock)
        if not self.responder.subscribed.wait(CONNECT_TIMEOUT):
            raise RuntimeError("the command responder did not subscribe")
        self.rng = random.Random(seed)
        self.tokens = iter(range(1, 10**9))
        self.published: dict[int, float] = {}  # token -> perf_counter when handed to paho
        self.origin: dict[int, tuple[str, int]] = {}  # token -> (site, edge event id)
        self.events_sent = self.alarms_sent = self.messages_sent = 0
        self.thumbnail = thumbnail  # published after each event's message, as mqtt.publish_media: thumbnails does
        self._stop_heartbeat = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def publisher(self, site: Site) -> Publisher:
        return self.publishers[site.index % len(self.publishers)]

    def publish_retained(self) -> None:
        """What each site's broker holds for it before the central connects: online, its status, its config."""
        for site in self.sites:
            publisher = self.publisher(site)
            publisher.publish(site.topics.available, b"online", retain=True)
            publisher.publish(site.topics.status, site.status_payload(), retain=True)
            publisher.publish(site.topics.config, site.config_payload(), retain=True)

    def start_heartbeat(self) -> None:
        """Each site's retained status again every 60 s, as an edge does, spread over the minute."""
        def beat() -> None:
            interval = 60.0 / len(self.sites)
            turn = 0
            while not self._stop_heartbeat.wait(interval):
                site = self.sites[turn % len(self.sites)]
                turn += 1
                self.publisher(site).publish(site.topics.status, site.status_payload(), retain=True)

        self._heartbeat = threading.Thread(target=beat, name="heartbeat", daemon=True)
        self._heartbeat.start()

    def event(self, alarm_every: int, prefix: str = PREFIX) -> int:
        """One new event at a random site (and every *alarm_every*-th, the site's guard raising its alarm);
        returns its token."""
        with self._lock:
            token = next(self.tokens)
            site = self.rng.choice(self.sites)
            edge_id, payload = site.new_event(f"[b{token}]", self.rng)
            alarm = alarm_every > 0 and token % alarm_every == 0
            messages = [(f"{prefix}/{site.id}/events", payload)]
            if self.thumbnail is not None:  # an edge queues the eager media right after the event's message
                messages += [(f"{prefix}/{site.id}/media/{image['id']}/thumbnail", self.thumbnail)
                             for image in site.events[edge_id]["images"]]
            if alarm:
                update, new_alarm = site.new_alarm(edge_id)
                messages += [(f"{prefix}/{site.id}/events", update), (f"{prefix}/{site.id}/alarms", new_alarm)]
                self.alarms_sent += alarm
            self.events_sent += 1
            self.messages_sent += len(messages)
            self.origin[token] = (site.id, edge_id)
            self.published[token] = time.perf_counter()
        publisher = self.publisher(site)
        for topic, body in messages:
            publisher.publish(topic, body)
        return token

    def unacknowledged(self) -> int:
        return sum(publisher.sent - publisher.acked for publisher in self.publishers)

    def close(self) -> None:
        self._stop_heartbeat.set()
        if self._heartbeat is not None:
            self._heartbeat.join(5)
        for publisher in self.publishers:
            publisher.close()
        self.responder.close()


def publish_paced(fleet: Fleet, rate: float, count: int, alarm_every: int) -> list[int]:
    """*count* events at *rate* a second, on a schedule (a late one does not shift the ones after it)."""
    tokens = []
    start = time.perf_counter()
    for n in range(count):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        tokens.append(fleet.event(alarm_every))
    return tokens


def publish_burst(fleet: Fleet, count: int, alarm_every: int, prefix: str = PREFIX) -> list[int]:
    return [fleet.event(alarm_every, prefix) for _ in range(count)]


