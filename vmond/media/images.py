"""Checks and thumbnails for camera snapshots (Pillow). Pure, blocking functions: call them off the event loop."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

ACCEPTED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png"}
MAX_PIXELS = 50_000_000  # beyond any camera sensor: a larger header is a decompression bomb
THUMBNAIL_SIZE = (480, 480)


class ImageRejected(ValueError):
    """The bytes are not an image we accept; the message says why, for the event's flags and the log."""


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int
    height: int
    thumbnail: bytes  # JPEG


def inspect_image(data: bytes) -> ImageInfo:
    """Verify *data* is a sane JPEG or PNG and make its thumbnail; raises :class:`ImageRejected` otherwise."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.format not in ACCEPTED_FORMATS:
                raise ImageRejected(f"format {probe.format} not accepted")
            width, height = probe.size
            # Checked before any pixel is decoded; Pillow's own bomb check only warns below twice its limit.
            if width * height > MAX_PIXELS or width < 1 or height < 1:
                raise ImageRejected(f"implausible size {width}x{height}")
            content_type = ACCEPTED_FORMATS[probe.format]
            probe.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", THUMBNAIL_SIZE)  # JPEG: decode at a reduced scale, far cheaper on a Pi
            image.thumbnail(THUMBNAIL_SIZE)
            out = io.BytesIO()
            image.convert("RGB").save(out, "JPEG", quality=75)
    except ImageRejected:
        raise
    except Exception as exc:  # Pillow raises many types for broken files
        raise ImageRejected(f"{type(exc).__name__}: {exc}") from exc
    return ImageInfo(content_type, width, height, out.getvalue())
