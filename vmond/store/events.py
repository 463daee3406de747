"""Alarm events in the database: recording an ingested mail, listing, status changes, and the Event JSON shape.

Every function here is synchronous and runs on a database thread (see :class:`vmond.store.db.Database`);
they return plain dicts, ready for JSON, so nothing lazy crosses back to the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import peewee as pw

from vmond.store import eventqueries as hot
from vmond.store import prepared
from vmond.store.changes import Change
from vmond.store.eventqueries import MediaRow
from vmond.store.eventqueries import event_query as event_query  # where the event readers take it from
from vmond.store.mediaout import queue_eager
from vmond.store.models import Account, AlarmEvent, AuditEntry, Camera, Mail, Media, Site, User, utcnow
from vmond.store.monitoring import off_wall_flags
from vmond.store.scope import EVERY_ACCOUNT, Scope
from vmond.store.sites import site_refs
from vmond.store.supervision import end_camera_silence
from vmond.util.kinds import event_kind, priority_of

STATUSES = ("active", "dismissed", "alarmed")
MAX_IMAGES_PER_EVENT = 100  # a camera stuck in a mail loop must not grow one event without end
STOP_WINDOW = 600.0  # seconds a "... Stop" mail may come after its "... Start" and still close the same event


class EventNotFound(LookupError):
    pass


class StatusConflict(ValueError):
    """The event is not in a state that allows the change (e.g. dismissing an event that became an alarm)."""


@dataclass(frozen=True)
class MediaRecord:
    kind: str  # image | video | raw
    path: str
    content_type: str
    sha256: str
    bytes: int
    thumb_path: str | None = None
    width: int | None = None
    height: int | None = None
    original_name: str | None = None


@dataclass(frozen=True)
class IngestRecord:
    """One accepted mail for one camera, parsed and with its media already on disk."""

    ingest_key: str
    local_part: str
    received_at: datetime
    event_time: datetime
    event_type: str
    phase: str | None = None  # "start" / "stop" for cameras that mail both ends of one alarm
    subject: str = ""
    body_excerpt: str = ""
    channel: str | None = None
    camera_name: str | None = None  # the camera's own name, as the mail gives it
    vendor: str | None = None
    is_test: bool = False
    flags: tuple[str, ...] = ()
    peer: str = ""
    mail_from: str = ""
    recipient: str = ""
    message_id: str | None = None
    size: int = 0
    defects: tuple[str, ...] = ()
    media: tuple[MediaRecord, ...] = field(default_factory=tuple)
    sha256: str | None = None  # of the whole message as received


@dataclass(frozen=True)
class IngestResult:
    event: dict[str, Any]
    created: bool  # False: the mail extended an open event, or was already recorded (replay)
    replayed: bool = False
    unused_media: tuple[str, ...] = ()  # files written for the mail but not kept (over MAX_IMAGES_PER_EVENT)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _event_dict(event: AlarmEvent, camera: Camera | None, account: Account | None, media: list[MediaRow],
                domain: str, site: dict[str, Any] | None = None) -> dict[str, Any]:
    images = [m for m in media if m.kind == "image"]
    video = next((m for m in media if m.kind == "video"), None)
    attachments = [m for m in media if m.kind in ("attachment", "raw")]
    return {
        "id": event.id,
        "camera": None if camera is None else {
            "id": camera.id,
            "name": camera.name,
            "smtp_address": f"{camera.smtp_local_part}@{domain}",
        },
        "account": None if account is None else {"id": account.id, "name": account.name},
        "received_at": _iso(event.received_at),
        "updated_at": _iso(event.updated_at),
        "event_time": _iso(event.event_time),
        "event_type": event.event_type,
        "subject": event.subject,
        "channel": event.channel,
        "camera_name": event.camera_name,
        "vendor": event.vendor,
        "status": event.status,
        "kind": event.kind,
        "priority": event.priority,
        "is_test": event.is_test,
        "flags": list(event.flags or []),
        "mail_count": event.mail_count,
        "images": [
            {
                "id": m.id,
                "url": f"/media/{m.id}",
                # A picture whose thumbnail is still to come (a burst: see store.thumbnails) shows itself.
                "thumbnail_url": f"/media/{m.id}/thumbnail" if m.thumb_path or m.site_id else f"/media/{m.id}",
                "width": m.width,
                "height": m.height,
                "content_type": m.content_type,
                "bytes": m.bytes,
                "sha256": m.sha256 or None,  # a central checks what it fetched (empty on a central's own mirror)
            }
            for m in sorted(images, key=lambda m: m.position)
        ],
        "video": {
            "state": event.video_state,
            "url": f"/media/{video.id}" if video is not None and event.video_state == "ready" else None,
        } | ({} if video is None or event.video_state != "ready" else {
            "id": video.id, "content_type": video.content_type, "bytes": video.bytes, "sha256": video.sha256 or None}),
        # Files kept as they came (not pictures), and the whole mail when it could not be parsed: for download.
        "attachments": [
            {"id": m.id, "url": f"/media/{m.id}", "kind": m.kind, "content_type": m.content_type,
             "bytes": m.bytes, "name": m.original_name, "sha256": m.sha256 or None}
            for m in sorted(attachments, key=lambda m: m.position)
        ],
    } | ({} if site is None else {"site": site})  # on a central: the site it came from, {"id", "name"}


def serialize_events(events: list[AlarmEvent], domain: str) -> list[dict[str, Any]]:
    """Event dicts for *events* (already joined with camera and account), media fetched in one query."""
    if not events:
        return []
    by_event: dict[int, list[MediaRow]] = {e.id: [] for e in events}
    for m in hot.media_of(list(by_event)):
        by_event[m.event_id].append(m)
    sites = site_refs({e.site_id for e in events})
    result = []
    for e in events:
        camera = e.camera if e.camera_id is not None else None
        account = camera.account if camera is not None else None
        result.append(_event_dict(e, camera, account, by_event[e.id], domain, sites.get(e.site_id or 0)))
    return result


def of_site(query: pw.ModelSelect[AlarmEvent], site: str | None) -> pw.ModelSelect[AlarmEvent]:
    """*query* limited to the events of the site with id *site* (on a central; None: every event)."""
    if site is None:
        return query
    return query.where(AlarmEvent.site.in_(Site.select(Site.id).where(Site.key == site)))


def list_events(domain: str, status: str = "active", limit: int = 100, include_tests: bool = False,
                scope: Scope = EVERY_ACCOUNT, site: str | None = None) -> list[dict[str, Any]]:
    """Events newest first; *status* is one of :data:`STATUSES` or ``all``; only those of *scope*'s accounts (and
    of *site*, on a central, when given)."""
    query = of_site(scope.where(event_query()), site)  # guards limited to accounts
    if status != "all":
        query = query.where(AlarmEvent.status == status)
    if not include_tests:
        query = query.where(AlarmEvent.is_test == False)  # noqa: E712 - peewee expression
    events = list(query.order_by(AlarmEvent.received_at.desc(), AlarmEvent.id.desc()).limit(limit))
    return serialize_events(events, domain)


def list_queue(domain: str, limit: int = 200, scope: Scope = EVERY_ACCOUNT, site: str | None = None
               ) -> list[dict[str, Any]]:
    """The wall's queue: active events (no test mails) of *scope*'s accounts (and *site*'s, when given), most
    urgent first, then the longest waiting, by the time vmond received them (never the camera's clock), then by id."""
    query = (of_site(scope.where(event_query()), site)
             .where(AlarmEvent.status == "active", AlarmEvent.is_test == False)  # noqa: E712 - peewee expression
             .where(AlarmEvent.off_wall == False)  # noqa: E712 - schedules and snooze: unmonitored, snoozed
             .order_by(AlarmEvent.priority, AlarmEvent.received_at, AlarmEvent.id).limit(limit))
    return serialize_events(list(query), domain)


def _kind_and_priority(record: IngestRecord, camera: Camera | None, priorities: Mapping[str, int] | None
                       ) -> tuple[str, int]:
    """The kind the mail names and its priority for the camera's account (its own over events.priorities)."""
    kind = event_kind(record.event_type, record.subject)
    account = camera.account.priorities if camera is not None else None
    return kind, priority_of(kind, priorities, account)


def get_event(domain: str, event_id: int) -> dict[str, Any]:
    event = hot.event_by_id(event_id)
    if event is None:
        raise EventNotFound(event_id)
    return serialize_events([event], domain)[0]


def _coalesce_target(camera: Camera, record: IngestRecord, window: float) -> AlarmEvent | None:
    """The camera's open event this mail belongs to: one that had a mail within the window, or, for the
    "Stop" half of a start/stop pair, the event its "Start" opened a while ago.

    Only an event of the same channel and camera name: a recorder mails for all its cameras from one address,
    and two cameras that see something at once are two things for a guard to look at, not one."""
    if record.is_test:
        return None
    if record.phase == "stop":
        cutoff = record.received_at - timedelta(seconds=max(window, STOP_WINDOW))
    elif window > 0:
        cutoff = record.received_at - timedelta(seconds=window)
    else:
        return None
    return hot.open_event(camera.id, record.channel, record.camera_name,
                          record.event_type if record.phase == "stop" else None, cutoff)


def report(change: Change, kind: str, event: dict[str, Any]) -> None:
    """The event changed: ``event.created`` or ``event.updated`` for the dashboards, ``new`` or ``update`` for the
    central station (queued in the caller's transaction)."""
    change.announce("event.created" if kind == "new" else "event.updated", event, about=("event", event["id"]))
    change.queue_event(kind, event)


def record_mail(domain: str, record: IngestRecord, coalesce_window: float, change: Change | None = None,
                priorities: Mapping[str, int] | None = None, timezone: str = "UTC") -> IngestResult:
    """Store one mail: a new event, or more images on the camera's open event within the coalescing window.

    Idempotent by ``record.ingest_key``: replaying a spool file that was already committed changes nothing and
    announces nothing. With *change*, the MQTT message reporting it is queued in the same transaction.
    *priorities* is ``events.priorities``; a mail that names a more urgent kind than its open event's raises it.
    *timezone* is ``site.timezone``, which the account's schedule is read in.
    """
    recorded = hot.event_of_mail(record.ingest_key)
    if recorded is not None:
        return IngestResult(get_event(domain, recorded), created=False, replayed=True)

    camera = hot.camera_for_mail(record.local_part)
    flags = list(record.flags)
    if camera is None:
        flags.append("unknown_camera")  # the camera was removed between RCPT and now; keep the alarm anyway
    event = _coalesce_target(camera, record, coalesce_window) if camera is not None else None
    # Schedules and snooze: not monitored or snoozed is flagged and off the wall, and joins no event on it.
    held = off_wall_flags(camera, record.received_at, timezone, record.is_test)
    event = None if event is not None and event.off_wall != bool(held) else event
    flags += held
    now = utcnow()
    created = event is None
    kind, priority = _kind_and_priority(record, camera, priorities)
    if event is None:
        event_id = prepared.insert(
            AlarmEvent,
            camera=camera,
            received_at=record.received_at,
            updated_at=now,
            event_time=record.event_time,
            event_type=record.event_type,
            subject=record.subject,
            body_excerpt=record.body_excerpt,
            channel=record.channel,
            camera_name=record.camera_name,
            vendor=record.vendor,
            is_test=record.is_test,
            flags=sorted(set(flags)),
            kind=kind,
            priority=priority,
            off_wall=bool(held),
        )
        position = 0
    else:
        event_id = event.id
        event.mail_count += 1
        event.updated_at = now
        event.flags = sorted(set(event.flags or []) | set(flags))
        if priority < event.priority:  # "Motion", then "Person" within the window: a person event
            event.kind, event.priority = kind, priority
        hot.save_extended(event)
        position = hot.media_count(event_id)

    mail_id = prepared.insert(
        Mail,
        ingest_key=record.ingest_key,
        event=event_id,
        received_at=record.received_at,
        peer=record.peer,
        mail_from=record.mail_from,
        recipient=record.recipient,
        message_id=record.message_id,
        subject=record.subject,
        size=record.size,
        defects=list(record.defects),
        sha256=record.sha256,
    )
    unused: list[str] = []
    for item in record.media:
        if item.kind == "image" and position >= MAX_IMAGES_PER_EVENT:
            unused += [p for p in (item.path, item.thumb_path) if p]
            continue
        prepared.insert(Media, event=event_id, mail=mail_id, kind=item.kind, position=position, path=item.path,
                        thumb_path=item.thumb_path, content_type=item.content_type, sha256=item.sha256,
                        width=item.width, height=item.height, bytes=item.bytes, original_name=item.original_name)
        position += 1
    if camera is not None:
        camera.last_mail_at = record.received_at
        camera.last_peer = record.peer
        if record.is_test:
            camera.test_mail_at = record.received_at
        hot.save_camera_mailed(camera)
        end_camera_silence(domain, camera, record.received_at, change)  # supervision: its mail ends a silence
    result = IngestResult(get_event(domain, event_id), created=created, unused_media=tuple(unused))
    report(change or Change(), "new" if created else "update", result.event)
    if change is not None and not created:
        queue_eager(change, result.event, mail_id=mail_id)  # a coalesced mail's pictures, per mqtt.publish_media
    return result


RETRY_WINDOW = 3600.0  # seconds in which an identical mail from the same camera is a resend, not a new alarm


def find_resend(local_part: str, sha256: str, received_at: datetime) -> int | None:
    """The event an identical earlier mail to this camera became, when this one is a camera's resend."""
    return hot.earlier_mail_event(local_part, sha256, received_at - timedelta(seconds=RETRY_WINDOW))


def record_resend(domain: str, ingest_key: str, event_id: int, record: IngestRecord,
                  change: Change | None = None) -> IngestResult:
    """A camera sent again what it had sent (it never saw our 250): note the mail on the original event, flagged
    ``retried``, instead of raising the same alarm twice."""
    existing = Mail.get_or_none(Mail.ingest_key == ingest_key)
    if existing is not None:
        return IngestResult(get_event(domain, existing.event_id), created=False, replayed=True)
    Mail.create(ingest_key=ingest_key, event=event_id, received_at=record.received_at, peer=record.peer,
                mail_from=record.mail_from, recipient=record.recipient, message_id=record.message_id,
                subject=record.subject, size=record.size, defects=["resend"], sha256=record.sha256)
    event = AlarmEvent.get_by_id(event_id)
    event.flags = sorted({*(event.flags or []), "retried"})
    event.updated_at = utcnow()
    event.save()
    result = IngestResult(get_event(domain, event_id), created=False)
    report(change or Change(), "update", result.event)
    return result


def set_status(domain: str, event_id: int, status: str, user_id: int | None, change: Change | None = None
               ) -> tuple[dict[str, Any], bool]:
    """Move an event to *status*; returns the event and whether anything changed (repeating it is harmless).

    A change is announced as ``event.<status>`` with ``by``, the username of who made it."""
    event = AlarmEvent.get_or_none(AlarmEvent.id == event_id)
    if event is None:
        raise EventNotFound(event_id)
    if event.status == status:
        return get_event(domain, event_id), False
    if event.status == "alarmed":
        raise StatusConflict(f"event {event_id} is an alarm; work it on the alarm page")
    previous = event.status
    event.status = status
    event.status_changed_by_id = user_id
    event.status_changed_at = event.updated_at = utcnow()
    event.save()
    AuditEntry.create(user=user_id, action=f"event.{status}", target_type="event", target_id=event_id,
                      detail={"from": previous, "to": status})
    changed = get_event(domain, event_id)
    change = change or Change()
    user = User.get_or_none(User.id == user_id) if user_id is not None else None
    change.announce(f"event.{status}", {**changed, "by": None if user is None else user.username},
                    about=("event", event_id))
    change.queue_event("update", changed)
    return changed, True


def media_for_download(media_id: int) -> dict[str, Any] | None:
    """Path and type of a media file (the web layer checks the caller's rights before serving it)."""
    media = Media.get_or_none(Media.id == media_id)
    if media is None:
        return None
    return {"id": media.id, "event_id": media.event_id, "kind": media.kind, "path": media.path,
            "thumb_path": media.thumb_path, "content_type": media.content_type}

