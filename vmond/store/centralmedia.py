"""A central station's copies of its sites' media (issue 18): which mirrored file is cached where.

A mirrored Media row starts with ``path=""`` (nothing fetched) and ``thumb_path=None``. When the site's bytes
arrive (:func:`store_media_file`) the row names the cached file; when the cache bound removes a file
(:func:`forget_cached`) it goes back to "not fetched", so that it is asked for again when someone opens it.
Synchronous, on a database thread, inside the caller's transaction.
"""

from __future__ import annotations

import logging
from typing import Any

from vmond.store.centralcommands import queue_command
from vmond.store.changes import Change
from vmond.store.events import get_event
from vmond.store.models import AlarmEvent, Media, Site

log = logging.getLogger(__name__)


def _origin(media: Media, site: Site, event: AlarmEvent) -> dict[str, Any]:
    return {"id": media.id, "site": site.key, "remote_id": media.remote_id, "event_id": event.id,
            "event_remote_id": event.remote_id, "kind": media.kind, "path": media.path,
            "thumb_path": media.thumb_path}


def _mirrored() -> Any:
    return (Media.select(Media, Site, AlarmEvent).join(Site, on=(Media.site == Site.id))
            .switch(Media).join(AlarmEvent, on=(Media.event == AlarmEvent.id)))


def media_origin(media_id: int) -> dict[str, Any] | None:
    """Where a mirrored media file comes from (site, its id there, its event's id there) and what is cached of
    it; None for a media row that is not a site's."""
    row = _mirrored().where(Media.id == media_id).first()
    return None if row is None else _origin(row, row.site, row.event)


def is_mirrored_media(site_key: str, remote_id: int) -> bool:
    """Whether the site's media *remote_id* has a mirrored row here (its event was mirrored)."""
    return bool(Media.select(Media.id).join(Site, on=(Media.site == Site.id))
                .where((Site.key == site_key) & (Media.remote_id == remote_id)).exists())


def event_pictures(event_id: int) -> list[dict[str, Any]]:
    """The pictures of a mirrored event (as :func:`media_origin` gives them): which a node has cached, it knows by
    its own disk (a row naming a file says that some node has it)."""
    rows = _mirrored().where((Media.event == event_id) & (Media.kind == "image"))
    return [_origin(row, row.site, row.event) for row in rows.order_by(Media.position, Media.id)]


def store_media_file(site_key: str, remote_id: int, thumbnail: bool, relpath: str, sha256: str, size: int,
                     domain: str, change: Change | None = None) -> int | None:
    """Name the cached file *relpath* on the mirrored row (the thumbnail's, or the file's with its sha256 and
    size) and announce its event as updated, so that open pages show it. Returns the row's id; None when the site's
    media id is not mirrored (yet)."""
    media = (Media.select(Media).join(Site, on=(Media.site == Site.id))
             .where((Site.key == site_key) & (Media.remote_id == remote_id)).first())
    if media is None:
        return None
    if (media.thumb_path if thumbnail else media.path) == relpath and (thumbnail or media.sha256 == sha256):
        return int(media.id)  # another node (or an earlier copy) named it already: nothing new to announce
    if thumbnail:
        media.thumb_path = relpath
    else:
        media.path, media.sha256, media.bytes = relpath, sha256, size
    media.save()
    if change is not None:
        change.announce("event.updated", get_event(domain, media.event_id), about=("event", media.event_id))
    return int(media.id)


def forget_cached(relpaths: list[str]) -> int:
    """The cache bound removes these files: rows naming them are "not fetched" again. Returns the rows changed."""
    if not relpaths:
        return 0
    changed = Media.update(path="").where(Media.site.is_null(False) & Media.path.in_(relpaths)).execute()
    changed += (Media.update(thumb_path=None)
                .where(Media.site.is_null(False) & Media.thumb_path.in_(relpaths)).execute())
    return int(changed)


def cached_paths() -> set[str]:
    """Every cached file the mirrored rows name (files that no row names are left over and may go first)."""
    names: set[str] = set()
    for media in Media.select(Media.path, Media.thumb_path).where(Media.site.is_null(False)):
        names.update(p for p in (media.path, media.thumb_path) if p)
    return names


def request_site_media(site_key: str, event_remote_id: int, remote_ids: list[int], event_id: int,
                       who: tuple[int, str], central: str, secret: str, prefix: str,
                       change: Change | None = None) -> dict[str, Any] | None:
    """Queue one ``media`` command asking the site for *remote_ids* of its event *event_remote_id*; returns the
    command (None: the site is not known here)."""
    site = Site.get_or_none(Site.key == site_key)
    if site is None:
        return None
    return queue_command(site, "media", {"event_id": event_remote_id}, {"media_ids": remote_ids}, who, central,
                         secret, prefix, event_id=event_id, change=change)
