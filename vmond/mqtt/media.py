"""Media files for a central station, read when their outbox message is sent (issue 18).

The outbox holds a reference (:mod:`vmond.store.mediaout`); here it becomes the file's bytes. A file removed
meanwhile (retention), or grown beyond ``mqtt.max_media_size``, is skipped: logged, never an error, never sent.
The file is read on the I/O executor, and never more than the bound.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING

from vmond.store.mediaout import THUMBNAIL, read_reference
from vmond.store.pictures import media_file

if TYPE_CHECKING:
    from vmond.media.store import MediaStore
    from vmond.store.db import Database

log = logging.getLogger(__name__)


def _read_bounded(path: Path, limit: int) -> bytes | None:
    with path.open("rb") as file:
        data = file.read(limit + 1)
    return None if len(data) > limit else data


async def media_bytes(payload: bytes, db: Database, media: MediaStore, io: Executor, limit: int) -> bytes | None:
    """The bytes a queued media message stands for, or None when there is nothing to send."""
    try:
        media_id, part = read_reference(payload)
    except ValueError:
        log.warning("mqtt: a media message that is not a reference: skipped")
        return None
    path = await db.read(media_file, media_id, part == THUMBNAIL)
    if path is None:
        log.info("mqtt: media %d is gone (retention): not published", media_id)
        return None
    try:
        data = await asyncio.get_running_loop().run_in_executor(io, _read_bounded, media.resolve(path), limit)
    except (OSError, ValueError) as exc:
        log.info("mqtt: media %d cannot be read (%s): not published", media_id, exc)
        return None
    if data is None:
        log.warning("mqtt: media %d (%s) is larger than mqtt.max_media_size: not published", media_id, part)
    return data
