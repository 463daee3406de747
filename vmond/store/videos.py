"""An event's clip in the database: what to encode from, its state, and the clip once made or adopted.

Synchronous: run on a database thread. Each change returns the event as it now is, and announces it through
*change* as ``event.updated``; a finished clip (ready or failed) is also queued as an MQTT update.
"""

from __future__ import annotations

from typing import Any

from vmond.store.changes import Change
from vmond.store.events import get_event, report
from vmond.store.mediaout import queue_eager
from vmond.store.models import AlarmEvent, Media, utcnow


def clip_inputs(event_id: int) -> dict[str, Any]:
    """The pictures to encode (in order), the current clip, and camera-sent videos not yet vetted."""
    media = list(Media.select().where(Media.event == event_id).order_by(Media.position, Media.id))
    event = AlarmEvent.get_or_none(AlarmEvent.id == event_id)
    return {
        "exists": event is not None,
        "state": event.video_state if event is not None else None,
        "images": [m.path for m in media if m.kind == "image"],
        "clip": next(({"id": m.id, "path": m.path} for m in media if m.kind == "video"), None),
        "camera_videos": [{"id": m.id, "path": m.path} for m in media
                          if m.kind == "attachment" and m.content_type == "video/mp4"],
    }


def _save(event: AlarmEvent, state: str, flag: str | None) -> None:
    event.video_state = state
    if flag and flag not in (event.flags or []):
        event.flags = sorted({*(event.flags or []), flag})
    event.updated_at = utcnow()
    event.save()


def set_video_state(domain: str, event_id: int, state: str, flag: str | None = None,
                    change: Change | None = None) -> dict[str, Any] | None:
    event = AlarmEvent.get_or_none(AlarmEvent.id == event_id)
    if event is None:
        return None
    _save(event, state, flag)
    changed = get_event(domain, event_id)
    change = change or Change()
    if state in ("ready", "failed"):
        report(change, "update", changed)
    else:  # a clip on its way: news for the dashboards, not for the central station
        change.announce("event.updated", changed, about=("event", event_id))
    return changed


def attach_clip(domain: str, event_id: int, path: str, *, sha256: str, size: int, width: int, height: int,
                change: Change | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """Make *path* the event's clip; returns the event and the path of the clip it replaces (to delete)."""
    event = AlarmEvent.get_or_none(AlarmEvent.id == event_id)
    if event is None:
        return None, path  # the event went away meanwhile (retention): the new file is the one to delete
    old = Media.get_or_none((Media.event == event) & (Media.kind == "video"))
    old_path = old.path if old is not None and old.path != path else None
    # The new row first: SQLite gives a deleted highest rowid out again, and a clip's URL (its id) is cached as
    # never changing, by browsers and by a central station.
    Media.create(event=event, kind="video", position=-1, path=path, content_type="video/mp4", sha256=sha256,
                 bytes=size, width=width, height=height)
    if old is not None:
        old.delete_instance()
    _save(event, "ready", None)
    changed = get_event(domain, event_id)
    report(change or Change(), "update", changed)
    if change is not None and changed is not None:
        queue_eager(change, changed, ("video",))  # the clip, after the update that announces it
    return changed, old_path


def adopt_camera_video(domain: str, event_id: int, media_id: int, *, width: int, height: int,
                       change: Change | None = None) -> dict[str, Any] | None:
    """The camera's own MP4 played fine in the probe: it becomes the event's clip (instead of one from stills)."""
    media = Media.get_or_none((Media.id == media_id) & (Media.event == event_id))
    if media is None:
        return None
    Media.update(kind="attachment").where((Media.event == event_id) & (Media.kind == "video")).execute()
    media.kind, media.width, media.height = "video", width, height
    media.save()
    event = AlarmEvent.get_by_id(event_id)
    _save(event, "ready", None)
    changed = get_event(domain, event_id)
    report(change or Change(), "update", changed)
    return changed


def reject_camera_video(domain: str, event_id: int, media_id: int, change: Change | None = None
                        ) -> dict[str, Any] | None:
    """The camera's MP4 did not pass: it stays an opaque download, the event says so (to the dashboards)."""
    Media.update(content_type="application/octet-stream").where(Media.id == media_id).execute()
    event = AlarmEvent.get_or_none(AlarmEvent.id == event_id)
    if event is None:
        return None
    _save(event, event.video_state, "video_rejected")
    changed = get_event(domain, event_id)
    (change or Change()).announce("event.updated", changed, about=("event", event_id))
    return changed
