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
from vmond.store.prepared import Prepared, slot


def clip_inputs(event_id: int) -> dict[str, Any]:
    """The pictures to encode (in order), the current clip, and camera-sent videos not yet vetted."""
    media = _MEDIA.execute(event=event_id).fetchall()  # (id, kind, path, content_type), in order
    state = _VIDEO_STATE.execute(id=event_id).fetchone()
    return {
        "exists": state is not None,
        "state": state[0] if state is not None else None,
        "images": [path for _, kind, path, _ in media if kind == "image"],
        "clip": next(({"id": id_, "path": path} for id_, kind, path, _ in media if kind == "video"), None),
        "camera_videos": _camera_videos(media),
    }


def camera_videos(event_id: int) -> list[dict[str, Any]]:
    """The event's camera-sent videos not yet vetted (all a clip needs when clips from stills are off)."""
    return _camera_videos(_MEDIA.execute(event=event_id).fetchall())


def _camera_videos(media: list[tuple[int, str, str, str]]) -> list[dict[str, Any]]:
    return [{"id": id_, "path": path} for id_, kind, path, content_type in media
            if kind == "attachment" and content_type == "video/mp4"]


# Asked after every mail with pictures: prepared once (vmond.store.prepared).
_MEDIA = Prepared(Media, lambda: Media.select(Media.id, Media.kind, Media.path, Media.content_type)
                  .where(Media.event == slot("event", Media.event)).order_by(Media.position, Media.id))
_VIDEO_STATE = Prepared(AlarmEvent, lambda: AlarmEvent.select(AlarmEvent.video_state)
                        .where(AlarmEvent.id == slot("id", AlarmEvent.id)))


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
