"""Pictures whose full check and thumbnail come after their event's commit (a burst reaches the wall first).

Such a picture is stored with ``thumb_path`` NULL; the pipeline decodes it when the spool has drained and records
the outcome here: its thumbnail, or, when the full decode refuses it, the picture is kept as a download-only
attachment and its event flagged ``image_rejected`` (what the check before the commit would have done, except that
the file is not lost). Either way the dashboards get an ``event.updated``; a refusal is also an ``update`` for
the central station, and the thumbnails that ``mqtt.publish_media`` publishes eagerly are queued then.
Synchronous: run on a database thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from vmond.store.changes import Change
from vmond.store.events import get_event, report
from vmond.store.mediaout import EAGER, THUMBNAIL, queue_media
from vmond.store.models import AlarmEvent, Media, utcnow


class Unfinished(NamedTuple):
    media_id: int
    event_id: int
    path: str


class Finished(NamedTuple):
    media_id: int
    thumb_path: str | None  # None: refused
    refusal: str = ""  # why, when refused


def unfinished_pictures(event_ids: Iterable[int] | None = None, limit: int = 1000) -> list[Unfinished]:
    """A camera's pictures still without their thumbnail, oldest first (of *event_ids*, or of every event)."""
    query = (Media.select(Media.id, Media.event, Media.path)
             .where(Media.kind == "image", Media.thumb_path.is_null(), Media.site.is_null())
             .order_by(Media.id).limit(limit))
    if event_ids is not None:
        query = query.where(Media.event.in_(list(event_ids)))
    return [Unfinished(m.id, m.event_id, m.path) for m in query]


def finish_pictures(domain: str, done: list[Finished], change: Change | None = None) -> list[str]:
    """Record the thumbnails and refusals in *done*; returns the thumbnails written for pictures that are gone
    meanwhile (retention, a deleted event), for the caller to remove."""
    change = change or Change()
    rows = {m.id: m for m in Media.select().where(Media.id.in_([d.media_id for d in done]))}
    orphans = [d.thumb_path for d in done if d.media_id not in rows and d.thumb_path]
    events: dict[int, list[int]] = {}  # event id -> its pictures that got a thumbnail
    refused: set[int] = set()  # events with a picture refused now
    for item in done:
        media = rows.get(item.media_id)
        if media is None or media.thumb_path is not None or media.kind != "image":
            if media is not None and item.thumb_path and item.thumb_path != media.thumb_path:
                orphans.append(item.thumb_path)
            continue
        thumbnails = events.setdefault(media.event_id, [])
        if item.thumb_path is None:
            media.kind = "attachment"  # kept as it came, for download; never rendered
            media.save()
            refused.add(media.event_id)
            row = AlarmEvent.get_by_id(media.event_id)
            row.flags = sorted({*(row.flags or []), "image_rejected"})
            row.updated_at = utcnow()
            row.save()
        else:
            media.thumb_path = item.thumb_path
            media.save()
            thumbnails.append(media.id)
    for event_id, thumbnails in events.items():
        event = get_event(domain, event_id)
        if event_id in refused:
            report(change, "update", event)  # the central station learns of the refusal as well
        else:  # only the thumbnails' address changed: the dashboards show them, MQTT need not say so
            change.announce("event.updated", event, about=("event", event_id))
        eager = EAGER.get(change.topics.publish_media, {}) if change.topics is not None else {}
        if thumbnails and not event["is_test"] and THUMBNAIL in eager.get("image", ()):
            queue_media(change, thumbnails, parts={"image": (THUMBNAIL,)})
    return orphans
