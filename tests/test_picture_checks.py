"""Pictures: the quick check a burst gets before its commit (header and end of file) and the full one (a decode at
the thumbnail's scale, and the thumbnail)."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from mailmaker import jpeg
from PIL import Image

from vmond.media.images import ImageRejected, check_image, inspect_image


def png(size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.effect_noise(size, 40).convert("RGB").save(out, "PNG")
    return out.getvalue()


def camera_jpeg() -> bytes:
    """A noisy 1080p frame, as cameras send (noise keeps the entropy-coded data long)."""
    out = io.BytesIO()
    Image.effect_noise((1920, 1080), 30).convert("RGB").save(out, "JPEG", quality=85)
    return out.getvalue()


def refuses(check: object, data: bytes) -> bool:
    try:
        check(data)  # type: ignore[operator]
    except ImageRejected:
        return True
    return False


def full_decode_refuses(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception:  # noqa: BLE001 - Pillow raises many types for broken files
        return True
    return False


@pytest.mark.parametrize("make, content_type", [(lambda: jpeg((640, 360)), "image/jpeg"),
                                                (lambda: png((640, 360)), "image/png")])
def test_a_whole_picture_passes_the_quick_check_without_a_thumbnail(make, content_type: str) -> None:  # noqa: ANN001
    info = check_image(make())
    assert (info.content_type, info.width, info.height, info.thumbnail) == (content_type, 640, 360, None)
    full = inspect_image(make())
    assert (full.content_type, full.width, full.height) == (content_type, 640, 360) and full.thumbnail


def test_padding_after_the_end_marker_is_still_a_whole_file() -> None:
    assert check_image(jpeg() + b"\x00" * 64 + b"\r\n").thumbnail is None


def test_a_picture_with_something_appended_gets_the_full_check_at_once() -> None:
    # Pillow takes a JPEG with bytes after its end: the quick check cannot tell, so the full check decides now.
    info = check_image(jpeg((320, 240)) + b"camera firmware trailer")
    assert info.thumbnail is not None and Image.open(io.BytesIO(info.thumbnail)).size == (320, 240)


def test_the_quick_check_refuses_exactly_the_truncated_files_a_full_decode_refuses() -> None:
    whole = camera_jpeg()
    cuts = [len(whole) * n // 40 for n in range(1, 40)] + [len(whole) - 2, len(whole) - 1]
    for cut in cuts:
        data = whole[:cut]
        assert refuses(check_image, data) == full_decode_refuses(data) == refuses(inspect_image, data), cut
    assert refuses(check_image, whole[:len(whole) // 2])  # the common damage: the tail is missing


def test_a_decompression_bomb_is_refused_before_a_pixel_is_decoded() -> None:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 8000, 8000, 8, 2, 0, 0, 0)  # above our limit, below Pillow's warning
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + \
        chunk(b"IEND", b"")
    with pytest.raises(ImageRejected, match="implausible size"):
        check_image(bomb)


def test_a_damaged_png_with_its_end_intact_passes_quickly_and_fails_the_full_check() -> None:
    data = bytearray(png())
    at = data.index(b"IDAT") + 8
    data[at] ^= 0xFF  # a flipped byte inside the image data: its chunk's CRC no longer matches
    assert check_image(bytes(data)).thumbnail is None
    with pytest.raises(ImageRejected):
        inspect_image(bytes(data))
