"""The queries of one mail's path through the store, prepared once (:mod:`vmond.store.prepared`).

Every camera mail runs each of these: the resend check before its media are written, then in ``record_mail`` the
replay check, the camera, the event it joins, its inserts and updates, and the event as the dashboards get it.
Synchronous: run on a database thread.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import peewee as pw

from vmond.store.models import Account, AlarmEvent, Camera, Mail, Media
from vmond.store.prepared import Prepared, slot


class MediaRow(NamedTuple):
    """The columns of a media row an Event shows (a model instance per row costs more than the query)."""

    id: int
    event_id: int
    kind: str
    position: int
    content_type: str
    width: int | None
    height: int | None
    bytes: int
    sha256: str
    original_name: str | None
    thumb_path: str | None  # None while a burst's picture waits for its thumbnail (and on a central's mirror)
    site_id: int | None  # on a central: the site the row mirrors


MEDIA_COLUMNS = (Media.id, Media.event, Media.kind, Media.position, Media.content_type, Media.width, Media.height,
                 Media.bytes, Media.sha256, Media.original_name, Media.thumb_path, Media.site)


def event_query() -> pw.ModelSelect[AlarmEvent]:
    # Only the camera's and account's columns an Event shows: a camera row is wide (its last SMTP transcript), and
    # peewee's cost grows with every column it names.
    return (AlarmEvent.select(AlarmEvent, Camera.id, Camera.name, Camera.smtp_local_part, Camera.account,
                              Account.id, Account.name)
            .join(Camera, pw.JOIN.LEFT_OUTER)
            .join(Account, pw.JOIN.LEFT_OUTER))


def media_of(event_ids: list[int]) -> list[MediaRow]:
    """The media rows of the events *event_ids* (in no particular order)."""
    if len(event_ids) == 1:
        rows = _MEDIA_OF_EVENT.execute(event=event_ids[0]).fetchall()
    else:
        rows = Media.select(*MEDIA_COLUMNS).where(Media.event.in_(event_ids)).tuples()
    return [MediaRow(*row) for row in rows]


_EVENT_BY_ID = Prepared(AlarmEvent, lambda: event_query().where(AlarmEvent.id == slot("id", AlarmEvent.id)).limit(1))
_MEDIA_OF_EVENT = Prepared(Media, lambda: Media.select(*MEDIA_COLUMNS).where(Media.event == slot("event", Media.event)))


def event_by_id(event_id: int) -> AlarmEvent | None:
    """The event joined with its camera and account, as :func:`event_query` selects them."""
    return _EVENT_BY_ID.first(id=event_id)


_MAIL_EVENT = Prepared(Mail, lambda: Mail.select(Mail.event).where(Mail.ingest_key == slot("key", Mail.ingest_key))
                       .limit(1))


def event_of_mail(ingest_key: str) -> int | None:
    """The id of the event the mail with *ingest_key* became, None when it is not recorded."""
    return _MAIL_EVENT.scalar(key=ingest_key)


_CAMERA = Prepared(Camera, lambda: (
    # what recording a mail reads of a camera, and its whole account (schedule, override, priorities)
    Camera.select(Camera.id, Camera.name, Camera.smtp_local_part, Camera.account, Camera.active,
                  Camera.snoozed_until, Account)
    .join(Account).where(Camera.smtp_local_part == slot("local", Camera.smtp_local_part)).limit(1)))


def camera_for_mail(local_part: str) -> Camera | None:
    """The camera of the address *local_part*, with the fields recording a mail reads, and its account."""
    return _CAMERA.first(local=local_part)


_coalescing: dict[tuple[bool, bool, bool], Prepared[Any]] = {}


def open_event(camera_id: int, channel: str | None, camera_name: str | None, event_type: str | None,
               cutoff: datetime) -> AlarmEvent | None:
    """The camera's newest active, non-test event of *channel* and *camera_name* with a mail since *cutoff*, and
    of *event_type* when given (the "Stop" half of a pair)."""
    shape = (channel is None, camera_name is None, event_type is not None)
    prepared = _coalescing.get(shape)
    if prepared is None:
        prepared = _coalescing.setdefault(shape, Prepared(AlarmEvent, lambda: _open_event_query(*shape)))
    values: dict[str, Any] = {"camera": camera_id, "cutoff": cutoff}
    if channel is not None:
        values["channel"] = channel
    if camera_name is not None:
        values["camera_name"] = camera_name
    if event_type is not None:
        values["event_type"] = event_type
    return prepared.first(**values)


def _open_event_query(no_channel: bool, no_camera_name: bool, by_type: bool) -> pw.ModelSelect[AlarmEvent]:
    # peewee writes "== None" as IS NULL: one shape of query each way
    query = (AlarmEvent.select().join(Mail)
             .where(AlarmEvent.camera == slot("camera", AlarmEvent.camera), AlarmEvent.status == "active",
                    AlarmEvent.is_test == False,  # noqa: E712 - peewee expression
                    AlarmEvent.channel == (None if no_channel else slot("channel", AlarmEvent.channel)),
                    AlarmEvent.camera_name == (None if no_camera_name
                                               else slot("camera_name", AlarmEvent.camera_name)),
                    Mail.received_at >= slot("cutoff", Mail.received_at)))
    if by_type:
        query = query.where(AlarmEvent.event_type == slot("event_type", AlarmEvent.event_type))
    return query.order_by(AlarmEvent.id.desc()).limit(1)


_MEDIA_COUNT = Prepared(Media, lambda: Media.select(pw.fn.COUNT(Media.id))
                        .where(Media.event == slot("event", Media.event)))


def media_count(event_id: int) -> int:
    return int(_MEDIA_COUNT.scalar(event=event_id))


_EXTEND_EVENT = Prepared(AlarmEvent, lambda: AlarmEvent.update({
    AlarmEvent.mail_count: slot("mail_count", AlarmEvent.mail_count),
    AlarmEvent.updated_at: slot("updated_at", AlarmEvent.updated_at),
    AlarmEvent.flags: slot("flags", AlarmEvent.flags),
    AlarmEvent.kind: slot("kind", AlarmEvent.kind),
    AlarmEvent.priority: slot("priority", AlarmEvent.priority),
}).where(AlarmEvent.id == slot("id", AlarmEvent.id)))


def save_extended(event: AlarmEvent) -> None:
    """Write what another mail changes on the open event it joins (the rest of the row stays as it is)."""
    _EXTEND_EVENT.execute(id=event.id, mail_count=event.mail_count, updated_at=event.updated_at, flags=event.flags,
                          kind=event.kind, priority=event.priority)


_CAMERA_MAILED = Prepared(Camera, lambda: Camera.update({
    Camera.last_mail_at: slot("at", Camera.last_mail_at),
    Camera.last_peer: slot("peer", Camera.last_peer),
    Camera.test_mail_at: pw.fn.COALESCE(slot("test_at", Camera.test_mail_at), Camera.test_mail_at),
}).where(Camera.id == slot("id", Camera.id)))


def save_camera_mailed(camera: Camera) -> None:
    """Write when the camera last mailed, from where, and its last test mail (unchanged when None)."""
    _CAMERA_MAILED.execute(id=camera.id, at=camera.last_mail_at, peer=camera.last_peer, test_at=camera.test_mail_at)


_RESEND = Prepared(Mail, lambda: (
    Mail.select(Mail.event).join(AlarmEvent).join(Camera)
    .where(Mail.sha256 == slot("sha256", Mail.sha256), Camera.smtp_local_part == slot("local", Camera.smtp_local_part),
           Mail.received_at >= slot("cutoff", Mail.received_at))
    .order_by(Mail.id).limit(1)))


def earlier_mail_event(local_part: str, sha256: str, cutoff: datetime) -> int | None:
    """The event of the first mail to *local_part* with the digest *sha256* received since *cutoff*."""
    return _RESEND.scalar(local=local_part, sha256=sha256, cutoff=cutoff)
