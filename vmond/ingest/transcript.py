"""What the installer may see of an SMTP session: a short transcript with every secret left out.

Each session keeps which cameras it named, what the client said and what it was answered, and the last refusal
each camera got. AUTH never shows more than its mechanism and, when it decodes cleanly, the login name: not the
argument as sent, not the client's answers to the server's challenges, not a blob that does not split the way
its mechanism says (a password could be anywhere in it).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import deque
from datetime import UTC, datetime
from typing import Any

TRANSCRIPT_LINES = 60
TRANSCRIPT_WIDTH = 200
LOGIN_NAME_LIMIT = 64  # characters of a login name shown or recorded; longer ones are cut
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# SASL mechanism names a client may send; anything else in that place is shown as "?" (it could be a secret).
KNOWN_MECHANISMS = frozenset({"LOGIN", "PLAIN", "CRAM-MD5", "DIGEST-MD5", "XOAUTH2", "OAUTHBEARER", "NTLM",
                              "GSSAPI", "SCRAM-SHA-1", "SCRAM-SHA-256", "ANONYMOUS", "EXTERNAL"})


def printable(text: str) -> str:
    """Text from the wire, safe to store and show: undecodable bytes replaced, control characters escaped."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def peer_text(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer)


def login_name(raw: bytes) -> str | None:
    """A login name fit to show: strict UTF-8 without control characters (a NUL would mean it holds more than a
    name), at most :data:`LOGIN_NAME_LIMIT` characters. None for anything else."""
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not name.strip() or _CONTROL.search(name):
        return None
    return name[:LOGIN_NAME_LIMIT]


def login_name_of(blob: bytes, mechanism: str) -> str | None:
    """The login name inside a decoded PLAIN or LOGIN response, or None when the blob has not that shape."""
    if mechanism == "PLAIN":
        parts = blob.split(b"\0")
        return login_name(parts[1]) if len(parts) == 3 else None
    return login_name(blob) if mechanism == "LOGIN" else None


def shown_auth(arg: str | None) -> str:
    """An AUTH command as the transcript shows it."""
    words = (arg or "").split()
    if not words:
        return "AUTH"
    mechanism = words[0].upper()
    if mechanism not in KNOWN_MECHANISMS:
        return "AUTH ?" if len(words) == 1 else "AUTH ? ***"
    if len(words) == 1:
        return f"AUTH {mechanism}"
    name = None
    if len(words) == 2:
        try:
            name = login_name_of(base64.b64decode(words[1], validate=True), mechanism)
        except (binascii.Error, ValueError):
            name = None
    if mechanism == "LOGIN" and name is not None:
        return f"AUTH LOGIN user={name}"  # LOGIN's initial response is the name alone; its password comes later
    return f"AUTH {mechanism} user={name} ***" if name is not None else f"AUTH {mechanism} ***"


def shown_command(name: str, arg: str | None) -> str:
    """A command as the transcript shows it: everything but AUTH as sent, AUTH without its secrets."""
    if name == "AUTH":
        return shown_auth(arg)
    return f"{name} {arg}" if arg else name


class SessionLog:
    """What the installer may see of one SMTP session, and which camera each refusal concerned."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.started_at = datetime.now(UTC)
        self.lines: deque[str] = deque(maxlen=TRANSCRIPT_LINES)
        self.cameras: set[int] = set()  # ids of every camera this session named or logged in as
        self.envelope_cameras: set[int] = set()  # the accepted recipients of the current mail
        self.current: set[int] = set()  # the cameras the command being answered concerns
        self.last_command = ""
        self.refusals: dict[int, dict[str, str]] = {}  # camera id -> its last 4xx/5xx in this session

    def concerns(self, camera_id: int) -> None:
        self.cameras.add(camera_id)
        self.current.add(camera_id)

    def accepted_recipient(self, camera_id: int) -> None:
        self.concerns(camera_id)
        self.envelope_cameras.add(camera_id)

    def client(self, text: str) -> None:
        self.last_command = printable(text)[:TRANSCRIPT_WIDTH]
        self.lines.append(f"C: {self.last_command}")
        verb = self.last_command.split(" ", 1)[0].upper()
        if verb in ("MAIL", "RSET", "HELO", "EHLO"):
            self.envelope_cameras = set()
        # A DATA refusal (too big, no space, local error) concerns every recipient of the mail.
        self.current = set(self.envelope_cameras) if verb == "DATA" else set()

    def auth_response(self, mechanism: str, part: str, name: str | None = None) -> None:
        """The client's answer to an AUTH challenge (*part*: "user name", "credentials", "password", or "answer"
        for one that could not be decoded), shown as what it was and, for a name, the name when it is clean; a
        secret never."""
        if part in ("password", "answer"):
            self.lines.append(f"C: <{part}, not shown>")
            return
        shown = "?" if name is None else printable(name)
        self.last_command = f"AUTH {mechanism} user={shown}"[:TRANSCRIPT_WIDTH]
        text = f"<user name {shown}>" if part == "user name" else f"<user {shown} and password, not shown>"
        self.lines.append(f"C: {text}"[:TRANSCRIPT_WIDTH])

    def server(self, text: str) -> None:
        shown = printable(text)[:TRANSCRIPT_WIDTH]
        self.lines.append(f"S: {shown}")
        if shown[:1] in ("4", "5"):
            refusal = {"at": datetime.now(UTC).isoformat(), "peer": self.peer, "command": self.last_command,
                       "reply": shown}
            for camera_id in self.current:
                self.refusals[camera_id] = refusal

    def transcript(self) -> list[str]:
        return [f"session from {self.peer} at {self.started_at.isoformat(timespec='seconds')}", *self.lines]
