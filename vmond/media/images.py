"""Checks and thumbnails for camera snapshots (Pillow). Pure, blocking functions: run them in a worker process.

Only JPEG and PNG are ever decoded (Pillow is told so: no other decoder is reachable from a mail), headers that
claim more pixels than any camera sensor are refused before a pixel is decoded, and a truncated file is refused
(Pillow's default; it is never switched to "load what you can").

Two depths: :func:`inspect_image` decodes the picture (at the thumbnail's scale) and makes its thumbnail;
:func:`check_image` reads only the header and checks that the file ends as a whole JPEG or PNG does, which is what
a truncated file (the common damage) fails. The pipeline uses the quick check while mails queue up, so that a
burst reaches the wall first, and decodes those pictures right after (see :mod:`vmond.ingest.finishing`).
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
    thumbnail: bytes | None  # JPEG; None after the quick check only


# How a whole file ends: a JPEG with its EOI marker, a PNG with its IEND chunk (cameras sometimes pad after it).
_ENDINGS = {"image/jpeg": b"\xff\xd9", "image/png": b"IEND\xaeB`\x82"}
_PADDING = b"\x00\r\n\t "


def _open_checked(data: bytes) -> tuple[Image.Image, str]:
    probe = Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS))
    width, height = probe.size
    # Checked before any pixel is decoded; Pillow's own bomb check only warns below twice its limit.
    if width * height > MAX_PIXELS or width < 1 or height < 1:
        probe.close()
        raise ImageRejected(f"implausible size {width}x{height}")
    return probe, ACCEPTED_FORMATS[str(probe.format)]


def check_image(data: bytes) -> ImageInfo:
    """The quick check: a JPEG or PNG header of a plausible size, and the file's end where a whole file's is.

    A file that does not end that way (truncated, or with something appended) gets the full
    :func:`inspect_image` at once, which decides. Raises :class:`ImageRejected`."""
    try:
        probe, content_type = _open_checked(data)
        with probe:
            width, height = probe.size
    except ImageRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
        raise ImageRejected(f"{type(exc).__name__}: {exc}"[:300]) from exc
    if not data.rstrip(_PADDING).endswith(_ENDINGS[content_type]):
        return inspect_image(data)
    return ImageInfo(content_type, width, height, None)


def inspect_image(data: bytes) -> ImageInfo:
    """Verify *data* is a sane JPEG or PNG and make its thumbnail; raises :class:`ImageRejected` otherwise."""
    formats = list(ACCEPTED_FORMATS)
    try:
        probe, content_type = _open_checked(data)
        with probe:
            width, height = probe.size
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


def inspect_file(path: str) -> ImageInfo:
    """:func:`inspect_image` of a stored picture, read here (in the worker) rather than sent to it."""
    with open(path, "rb") as file:
        return inspect_image(file.read())
