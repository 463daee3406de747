"""Media for a central station (issue 18): which files of an event go out on ``<prefix>/<site>/media/<id>``.

A media message waits in the outbox as a small reference (``{"media_id", "part"}``), never the file itself: the
forwarder reads the file when it sends the message (:mod:`vmond.mqtt.media`). A file larger than
``mqtt.max_media_size`` is not queued (the caller is told); one that retention removes before it is sent is skipped
then. The rows carry their event's id, so retention waits for them as for the event's own messages.
Synchronous: run on a database thread, inside the caller's write transaction.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NamedTuple

from vmond.store import outbox
from vmond.store.models import Media

if TYPE_CHECKING:
    from vmond.store.changes import Change

FILE, THUMBNAIL = "file", "thumbnail"
# mqtt.publish_media -> media kind -> the parts published eagerly when the event is recorded
EAGER: dict[str, dict[str, tuple[str, ...]]] = {
    "none": {},
    "thumbnails": {"image": (THUMBNAIL,)},
    "pictures": {"image": (FILE, THUMBNAIL)},
    "all": {"image": (FILE, THUMBNAIL), "video": (FILE,), "attachment": (FILE,)},
}
REQUESTED = {"image": (FILE, THUMBNAIL), "video": (FILE,), "attachment": (FILE,), "raw": (FILE,)}


class Queued(NamedTuple):
    queued: list[int]  # media ids whose messages are in the outbox now
    too_large: list[int]  # larger than mqtt.max_media_size: not published
    unknown: list[int]  # no such media (of that event)


def reference(media_id: int, part: str) -> bytes:
    return json.dumps({"media_id": media_id, "part": part}, separators=(",", ":")).encode()


def read_reference(payload: bytes) -> tuple[int, str]:
    """(media id, part) of a queued media message; ValueError if it is not one."""
    data: Any = json.loads(payload)
    if not isinstance(data, dict) or not isinstance(data.get("media_id"), int) or data.get("part") not in (
            FILE, THUMBNAIL):
        raise ValueError("not a media reference")
    return data["media_id"], data["part"]


def queue_media(change: Change | None, media_ids: list[int] | None, event_id: int | None = None,
                parts: dict[str, tuple[str, ...]] | None = None, mail_id: int | None = None) -> Queued:
    """Queue *media_ids* (None: all of *event_id*'s) for the central station: each file, and a picture's
    thumbnail too (*parts* narrows it down, per media kind). The ``media`` command calls this."""
    parts = REQUESTED if parts is None else parts
    query = Media.select().order_by(Media.event, Media.position, Media.id)
    if media_ids is not None:
        query = query.where(Media.id.in_(media_ids))
    if event_id is not None:
        query = query.where(Media.event == event_id)
    if mail_id is not None:
        query = query.where(Media.mail == mail_id)
    found = list(query)
    result = Queued([], [], sorted(set(media_ids or ()) - {m.id for m in found}))
    if change is None or change.topics is None:
        return result
    topics = change.topics
    for media in found:
        wanted = parts.get(media.kind, ())
        if not wanted:
            continue
        if FILE in wanted and media.bytes > topics.max_media_size:
            result.too_large.append(media.id)
            wanted = tuple(part for part in wanted if part != FILE)
        wanted = tuple(part for part in wanted if part != THUMBNAIL or media.thumb_path)
        for part in wanted:
            outbox.enqueue(topics.media(media.id, part == THUMBNAIL), reference(media.id, part),
                           event_id=media.event_id)
            change.queued += 1
        if wanted:
            result.queued.append(media.id)
    return result


def queue_eager(change: Change, event: dict[str, Any], kinds: tuple[str, ...] | None = None,
                mail_id: int | None = None) -> None:
    """A new event's media per ``mqtt.publish_media``; only its new clip (*kinds*), or those of a mail that
    joined it (*mail_id*)."""
    if change.topics is None or event["is_test"]:
        return
    parts = EAGER.get(change.topics.publish_media, {})
    if kinds is not None:
        parts = {kind: found for kind, found in parts.items() if kind in kinds}
    if parts:
        queue_media(change, None, event["id"], parts, mail_id)
