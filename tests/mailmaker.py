"""Camera mails made to order from the shared samples: a recorder's mail for one of its channels, at a given time
on the camera's clock; and the pieces of a mail made by hand (a picture, a body in base64)."""

from __future__ import annotations

import base64
import io
from datetime import datetime

from conftest import sample
from PIL import Image

_DVR = "nvr-fn3108xe-motion.eml"
_SUBJECT = b"NVR alarm:FN3108XE channel:2 detected motion alarm at 2020-12-21 02:01:38 "
_TEXT = (b"Content-Transfer-Encoding: 7bit\r\n\r\n"
         b"This is a NVR alarm mail:FN3108XE channel:2 detected motion alarm at 2020-12-21 02:01:38 \r\n")
_DATE = b"Date: 21 Dec 2020 5:1:38\r\n"


def dvr_mail(camera: str = "CAM 2 Garage", number: str = "A2", channel: int = 2, camera_clock: datetime | None = None,
             tag: str = "") -> bytes:
    """The generic NVR's mail with ``CAMERA NAME(NUM): <camera>(<number>)`` in its text part, base64-encoded as
    some recorders send it; *camera_clock* (naive, the camera's wall clock) replaces the alarm time and the Date;
    *tag* makes otherwise equal mails differ (a camera's resend is byte for byte the same)."""
    raw = sample(_DVR)
    assert _SUBJECT in raw and _TEXT in raw and raw.startswith(_DATE)
    when = (camera_clock or datetime(2020, 12, 21, 2, 1, 38)).strftime("%Y-%m-%d %H:%M:%S")
    text = (f"This is a NVR alarm mail:FN3108XE channel:{channel} detected motion alarm at {when} {tag}\r\n"
            f"CAMERA NAME(NUM): {camera}({number})\r\n").encode()
    raw = raw.replace(_TEXT, b"Content-Transfer-Encoding: base64\r\n\r\n" + base64_lines(text))
    raw = raw.replace(_SUBJECT, f"NVR alarm:FN3108XE channel:{channel} detected motion alarm at {when}".encode())
    if camera_clock is not None:
        raw = raw.replace(_DATE, f"Date: {camera_clock.strftime('%d %b %Y %H:%M:%S')}\r\n".encode())
    return raw


def base64_lines(data: bytes) -> bytes:
    """*data* in base64 as a mail body carries it: lines of 76 characters, each ending in CRLF."""
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def jpeg(size: tuple[int, int] = (32, 24), color: str = "red") -> bytes:
    """A small JPEG picture of one colour."""
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG")
    return out.getvalue()
