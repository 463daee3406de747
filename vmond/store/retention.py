"""What retention removes, oldest first, and removing it. Run on a database thread.

Media: only closed events give up media: dismissed ones, and alarms that are resolved. Never an active event,
never an open alarm, never an event with an MQTT message the central station has not acknowledged yet. A
dismissed event past ``storage.retention`` goes entirely, with its mails and its audit entries; an alarm keeps
its record (notes, audit, resolution) and loses only its pictures and clip.

Audit: an entry about an event goes with the event; every other entry (an alarm's trail, logins, changes to
users, accounts and cameras) is kept for ``storage.audit_retention``, which is never shorter than
``storage.retention``.
"""

from __future__ import annotations

from datetime import datetime

import peewee as pw

from vmond.store.models import Alarm, AlarmEvent, AuditEntry, Mail, Media, OutboxMessage


def _closed() -> pw.ModelSelect[AlarmEvent]:
    unforwarded = OutboxMessage.select(OutboxMessage.event_id).where(OutboxMessage.event_id.is_null(False))
    resolved = Alarm.select(Alarm.event).where(Alarm.state == "resolved")
    return (AlarmEvent.select(AlarmEvent.id, AlarmEvent.status)
            .where(((AlarmEvent.status == "dismissed") | (AlarmEvent.id.in_(resolved)))
                   & AlarmEvent.id.not_in(unforwarded)))


def oldest_with_media(limit: int, before: datetime | None = None) -> list[int]:
    """Closed events that still have media, oldest first (optionally only those received before *before*)."""
    query = _closed().where(AlarmEvent.id.in_(Media.select(Media.event)))
    if before is not None:
        query = query.where(AlarmEvent.received_at < before)
    return [e.id for e in query.order_by(AlarmEvent.received_at, AlarmEvent.id).limit(limit)]


def oldest_media_sizes(limit: int) -> list[tuple[int, int]]:
    """:func:`oldest_with_media` with the bytes of each event's media (pictures, clips; not thumbnails)."""
    ids = oldest_with_media(limit)
    query = Media.select(Media.event, pw.fn.SUM(Media.bytes)).where(Media.event.in_(ids)).group_by(Media.event)
    sizes: dict[int, int] = dict(query.tuples())  # type: ignore[arg-type]  # stubs: .tuples() rows typed as models
    return [(event_id, int(sizes.get(event_id) or 0)) for event_id in ids]


def expired_dismissed(before: datetime, limit: int) -> list[int]:
    return [e.id for e in _closed().where(AlarmEvent.status == "dismissed", AlarmEvent.received_at < before)
            .order_by(AlarmEvent.received_at).limit(limit)]


def drop_media(event_ids: list[int], delete_events: bool = False) -> tuple[list[str], int]:
    """Remove the media rows of these events (and, with *delete_events*, the dismissed ones among them with their
    mails and audit entries); returns the files to delete and the bytes they held. The caller deletes the files
    after this commit."""
    if not event_ids:
        return [], 0
    rows = list(Media.select().where(Media.event.in_(event_ids)))
    paths = [p for m in rows for p in (m.path, m.thumb_path) if p]
    freed = sum(m.bytes for m in rows)
    Media.delete().where(Media.event.in_(event_ids)).execute()
    if delete_events:
        gone = [e.id for e in AlarmEvent.select(AlarmEvent.id)
                .where(AlarmEvent.id.in_(event_ids), AlarmEvent.status == "dismissed")]
        Mail.delete().where(Mail.event.in_(gone)).execute()
        AuditEntry.delete().where(AuditEntry.target_type == "event", AuditEntry.target_id.in_(gone)).execute()
        AlarmEvent.delete().where(AlarmEvent.id.in_(gone)).execute()
    for event in AlarmEvent.select().where(AlarmEvent.id.in_(event_ids)):
        event.flags = sorted({*(event.flags or []), "media_expired"})
        event.video_state = "none"
        event.save()
    return paths, freed


def expire_audit(before: datetime, limit: int) -> int:
    """Remove up to *limit* audit entries older than *before*; returns how many went."""
    expired = AuditEntry.select(AuditEntry.id).where(AuditEntry.at < before).limit(limit)
    return AuditEntry.delete().where(AuditEntry.id.in_(expired)).execute()


def orphaned_event_audit(limit: int) -> int:
    """Remove up to *limit* audit entries of events that are gone (removed by a version that left them)."""
    events = AlarmEvent.select(AlarmEvent.id)
    orphans = (AuditEntry.select(AuditEntry.id)
               .where(AuditEntry.target_type == "event", AuditEntry.target_id.not_in(events)).limit(limit))
    return AuditEntry.delete().where(AuditEntry.id.in_(orphans)).execute()
