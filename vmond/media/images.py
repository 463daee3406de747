"""Checks and thumbnails for camera snapshots (Pillow). Pure, blocking functions: run them in a worker process.

Only JPEG and PNG are ever decoded (Pillow is told so: no other decoder is reachable from a mail), headers that
claim more pixels than any camera sensor are refused before a pixel is decoded, and a truncated file is refused
(Pillow's default; it is never switched to "load what you can").
"""

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
    formats = list(ACCEPTED_FORMATS)
    try:
        with Image.open(io.BytesIO(data), formats=formats) as probe:
            width, height = probe.size
            # Checked before any pixel is decoded; Pillow's own bomb check only warns below twice its limit.
            if width * height > MAX_PIXELS or width < 1 or height < 1:
                raise ImageRejected(f"implausible size {width}x{height}")
            content_type = ACCEPTED_FORMATS[str(probe.format)]
            probe.verify()
        with Image.open(io.BytesIO(data), formats=formats) as image:
            # JPEG: decode at the smallest scale that still covers the thumbnail (draft wants the thumbnail's
            # real size: with a square box a 16:9 frame could never go below half scale).
            scale = min(THUMBNAIL_SIZE[0] / width, THUMBNAIL_SIZE[1] / height, 1.0)
            image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
            image.load()  # the whole stream: a truncated file fails here
            image.thumbnail(THUMBNAIL_SIZE)
            out = io.BytesIO()
            image.convert("RGB").save(out, "JPEG", quality=75)
    except ImageRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
        raise ImageRejected(f"{type(exc).__name__}: {exc}"[:300]) from exc
    return ImageInfo(content_type, width, height, out.getvalue())
