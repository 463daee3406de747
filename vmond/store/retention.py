"""Which media may go when the disk needs room, oldest first, and removing them. Run on a database thread.

Only closed events give up media: dismissed ones, and alarms that are resolved. Never an active event, never an
open alarm, never an event with an MQTT message the central station has not acknowledged yet. A dismissed event
past ``storage.retention`` goes entirely; an alarm keeps its record (notes, audit, resolution) and loses only
its pictures and clip.
"""

from __future__ import annotations

from datetime import datetime

import peewee as pw

from vmond.store.models import Alarm, AlarmEvent, Mail, Media, OutboxMessage


def _closed() -> pw.ModelSelect:
    unforwarded = OutboxMessage.select(OutboxMessage.event_id).where(OutboxMessage.event_id.is_null(False))
    resolved = Alarm.select(Alarm.event).where(Alarm.state == "resolved")
    return (AlarmEvent.select(AlarmEvent.id, AlarmEvent.status)
            .where(((AlarmEvent.status == "dismissed") | (AlarmEvent.id.in_(resolved)))
                   & AlarmEvent.id.not_in(unforwarded)))


def media_bytes() -> int:
    return int(Media.select(pw.fn.COALESCE(pw.fn.SUM(Media.bytes), 0)).scalar())


def oldest_with_media(limit: int, before: datetime | None = None) -> list[int]:
    """Closed events that still have media, oldest first (optionally only those received before *before*)."""
    query = _closed().where(AlarmEvent.id.in_(Media.select(Media.event)))
    if before is not None:
        query = query.where(AlarmEvent.received_at < before)
    return [e.id for e in query.order_by(AlarmEvent.received_at, AlarmEvent.id).limit(limit)]


def expired_dismissed(before: datetime, limit: int) -> list[int]:
    return [e.id for e in _closed().where(AlarmEvent.status == "dismissed", AlarmEvent.received_at < before)
            .order_by(AlarmEvent.received_at).limit(limit)]


def drop_media(event_ids: list[int], delete_events: bool = False) -> tuple[list[str], int]:
    """Remove the media rows of these events (and the events themselves with *delete_events*); returns the files
    to delete and the bytes they held. The caller deletes the files after this commit."""
    if not event_ids:
        return [], 0
    rows = list(Media.select().where(Media.event.in_(event_ids)))
    paths = [p for m in rows for p in (m.path, m.thumb_path) if p]
    freed = sum(m.bytes for m in rows)
    Media.delete().where(Media.event.in_(event_ids)).execute()
    if delete_events:
        Mail.delete().where(Mail.event.in_(event_ids)).execute()
        AlarmEvent.delete().where(AlarmEvent.id.in_(event_ids), AlarmEvent.status == "dismissed").execute()
    for event in AlarmEvent.select().where(AlarmEvent.id.in_(event_ids)):
        event.flags = sorted({*(event.flags or []), "media_expired"})
        event.video_state = "none"
        event.save()
    return paths, freed
