"""The ingest benchmark's mails: the camera-mail samples of the test suite, and generated camera mails.

A generated mail is Hikvision-like: a text part and N JPEG attachments (noisy 1080p frames of about 265 kB, see
scenes.py), base64 in 76-column CRLF lines. Each mail is kept as a :class:`Template`, split at its Subject line, so
that every mail sent carries a unique token at the cost of a concatenation.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scenes import camera_jpegs  # bench/ is the script's own folder

ROOT = Path(__file__).resolve().parent.parent
MAIL_DIR = ROOT / "tests" / "data" / "camera-mail"
JPEG_SIZE = (1920, 1080)
JPEG_QUALITY = 82  # about 260 kB at 1080p with the sensor noise of scenes.py


def generated_jpegs(seed: int, count: int = 3, size: tuple[int, int] = JPEG_SIZE) -> list[bytes]:
    return camera_jpegs(count, *size, seed=seed, quality=JPEG_QUALITY)


def camera_mail(seed: int, jpegs: Sequence[bytes]) -> bytes:
    """A camera's alarm mail: a text part and *jpegs* as attachments, base64 in 76-column CRLF lines."""
    boundary = f"----=_bench_{seed:04d}"
    parts = [
        "From: camera@cam.lan\r\nTo: alarm@monitor.local\r\nSubject: Motion Detection on Channel 1\r\n"
        "Date: Wed, 01 May 2024 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        "EVENT TYPE: Motion Detection\r\nEVENT TIME: 2024-05-01,12:00:00\r\nCHANNEL NAME: Camera 01\r\n\r\n"
    ]
    for index, jpeg in enumerate(jpegs, 1):
        encoded = base64.encodebytes(jpeg).replace(b"\n", b"\r\n").decode()
        parts.append(f'--{boundary}\r\nContent-Type: image/jpeg; name="ch01-{index}.jpg"\r\n'
                     f'Content-Disposition: attachment; filename="ch01-{index}.jpg"\r\n'
                     f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}")
    parts.append(f"--{boundary}--\r\n")
    return "".join(parts).encode()


def generated_mail(seed: int, pictures: int = 3, size: tuple[int, int] = JPEG_SIZE) -> bytes:
    """The bench's usual camera mail: three 1080p JPEGs, about 1.1 MB on the wire."""
    return camera_mail(seed, generated_jpegs(seed, pictures, size))


@dataclass(frozen=True)
class Template:
    """A mail split at the end of its Subject line, dot-stuffed, so that a token costs a concatenation."""

    name: str
    head: bytes
    tail: bytes  # ends with CRLF; the final ".\r\n" is sent on its own (it starts the latency clock)
    pictures: int

    @classmethod
    def of(cls, name: str, raw: bytes, pictures: int) -> Template:
        match = re.search(rb"^Subject:[^\r\n]*", raw, re.MULTILINE | re.IGNORECASE)
        assert match, name
        head, tail = raw[:match.end()], raw[match.end():]  # the tail starts with the Subject's line end
        # Dot-stuffing after CRLF only, as RFC 5321 has it (and as cameras sending bare LF do).
        head = (b"\r\n" + head).replace(b"\r\n.", b"\r\n..")[2:]
        tail = tail.replace(b"\r\n.", b"\r\n..")
        if not tail.endswith(b"\r\n"):
            tail += b"\r\n"
        return cls(name, head, tail, pictures)

    def mail(self, token: str) -> bytes:
        return self.head + f" {token}".encode() + self.tail

    @property
    def size(self) -> int:
        return len(self.head) + len(self.tail)


def sample_templates() -> list[Template]:
    expected = json.loads((MAIL_DIR / "expected.json").read_text())
    return [Template.of(path.stem, path.read_bytes(), expected.get(path.name, {}).get("images", 0))
            for path in sorted(MAIL_DIR.glob("*.eml"))]
