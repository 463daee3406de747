"""A central station's media routes (issue 18): a site's picture or clip served from the cache, fetched from the
site over MQTT when it is not there yet (see :mod:`vmond.central.media`)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from vmond.central.media import CentralMedia, NotFetched

log = logging.getLogger(__name__)

_ERRORS: dict[int, type[web.HTTPException]] = {404: web.HTTPNotFound, 503: web.HTTPServiceUnavailable,
                                               504: web.HTTPGatewayTimeout}


async def fetch_from_site(central_media: CentralMedia, media_id: int, thumbnail: bool,
                          who: dict[str, Any] | None, known: str | None) -> str:
    """The cached file's path (*known*: the one its row names), fetched first when needed; an HTTP error saying
    why it cannot be served."""
    try:
        relpath = await central_media.fetch(media_id, thumbnail, who, known)
    except NotFetched as exc:
        error = _ERRORS.get(exc.status, web.HTTPServiceUnavailable)
        headers = {"Retry-After": "10"} if exc.status in (503, 504) else None
        raise error(text=f"Picture not available yet: {exc.reason}\n" if exc.status != 404
                    else f"Not available: {exc.reason}\n", headers=headers) from None
    await central_media.served(relpath)
    return relpath


async def prefetch_pictures(central_media: CentralMedia, event_id: int, who: dict[str, Any] | None) -> None:
    """The event page was opened: its full pictures are asked for now, in one command (the page still renders
    when that fails; each picture then asks on its own)."""
    try:
        await central_media.prefetch_event(event_id, who)
    except NotFetched as exc:
        log.warning("central: the pictures of event %d cannot be asked for: %s", event_id, exc.reason)
