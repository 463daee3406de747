"""Event pictures in the database as the MQTT forwarder needs them: each camera's newest picture for its retained
snapshot topic, and a picture's thumbnail to embed in an event message. Run on a database thread.

Camera test mails stay local, as their events do: their pictures are never a camera's snapshot.
"""

from __future__ import annotations

from typing import Any

import peewee as pw

from vmond.store.models import AlarmEvent, Camera, Media


def latest_images(camera_ids: list[int] | None = None) -> dict[int, dict[str, Any]]:
    """The newest picture of each active camera (or of *camera_ids*): ``{camera_id: {"media_id", "path"}}``
    with *path* a JPEG under the media directory."""
    newest = (Media.select(AlarmEvent.camera.alias("camera_id"), pw.fn.MAX(Media.id).alias("media_id"))
              .join(AlarmEvent)
              .join(Camera)
              .where(Media.kind == "image", AlarmEvent.is_test == False, Camera.active == True)  # noqa: E712
              .group_by(AlarmEvent.camera))
    if camera_ids is not None:
        newest = newest.where(AlarmEvent.camera.in_(camera_ids))
    ids = {row["camera_id"]: row["media_id"] for row in newest.dicts()}  # type: ignore[index]  # stubs: rows as models
    if not ids:
        return {}
    media = {m.id: m for m in Media.select(Media.id, Media.path, Media.thumb_path, Media.content_type)
             .where(Media.id.in_(list(ids.values())))}
    return {camera_id: {"media_id": media_id, "path": _jpeg_path(media[media_id])}
            for camera_id, media_id in ids.items() if media_id in media}


def _jpeg_path(media: Media) -> str:
    # The snapshot topic carries JPEG; a camera that sent a PNG gets its (JPEG) thumbnail published instead.
    if media.content_type == "image/jpeg" or not media.thumb_path:
        return media.path
    return media.thumb_path


def thumbnail_path(media_id: int) -> str | None:
    """The stored thumbnail of picture *media_id* (None if it has none or is gone)."""
    media = Media.get_or_none(Media.id == media_id)
    return None if media is None else media.thumb_path


def media_file(media_id: int, thumbnail: bool = False) -> str | None:
    """The stored file of *media_id*, or its thumbnail (None if there is none or it is gone)."""
    media = Media.get_or_none(Media.id == media_id)
    if media is None:
        return None
    return str(media.thumb_path) if thumbnail and media.thumb_path else None if thumbnail else str(media.path)
