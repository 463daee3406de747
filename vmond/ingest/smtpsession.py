"""One SMTP session: aiosmtpd's protocol with what real cameras need.

- DATA is read in large chunks up to ``<CR><LF>.<CR><LF>`` instead of aiosmtpd's line-at-a-time loop: a
  camera's 1 MB of base64 is a few reads, not ten thousand awaits, and a line longer than RFC 5321's 1,000
  octets (or bare LF line ends, as some camera firmware sends) is accepted instead of earning a permanent 500
  that would lose the alarm. Only CRLF.CRLF ends the data (a bare ``\\n.\\n`` does not: aiosmtpd's
  SMTP-smuggling fix), dot-unstuffing is that of aiosmtpd (byte-identical content), and the size limit is
  enforced while reading: past ``max_message_size`` the rest is discarded as it arrives, then 552.
- AUTH works after HELO and with lower-case mechanism names.
- Peers outside ``smtp.allow_networks`` get 554 before anything else.
- The server can end idle sessions with 421 when it stops.
- Each session keeps a short transcript (secrets and message content left out) for the installer: which
  cameras it named, what it said, and the last refusal it got.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword

from vmond.crashpoints import crashpoint
from vmond.ingest.replies import Reply

if TYPE_CHECKING:
    from vmond.ingest.smtp import SmtpServer

log = logging.getLogger(__name__)

END_OF_DATA = b"\r\n.\r\n"
READ_CHUNK = 256 * 1024  # bytes asked of the stream reader at once while in DATA
DATA_DEADLINE = 600.0  # seconds for one message's DATA, however steadily it trickles in
TRANSCRIPT_LINES = 60
TRANSCRIPT_WIDTH = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text from the wire, safe to store and show: undecodable bytes replaced, control characters escaped."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


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


def _shown_command(name: str, arg: str | None) -> str:
    """The command as the transcript shows it: the login name an AUTH carries, never its password."""
    if name == "AUTH" and arg:
        mechanism, _, initial = arg.partition(" ")
        if not initial:
            return f"AUTH {mechanism}"
        try:
            decoded = base64.b64decode(initial, validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return f"AUTH {mechanism} ***"
        user = decoded.split("\0")[1] if mechanism.upper() == "PLAIN" and decoded.count("\0") == 2 else decoded
        shown = f" user={user}" if mechanism.upper() in ("LOGIN", "PLAIN") else ""
        return f"AUTH {mechanism}{shown} ***" if mechanism.upper() != "LOGIN" else f"AUTH {mechanism}{shown}"
    return f"{name} {arg}" if arg else name


def peer_text(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer)


DOT_PROBES = 64  # dots looked at one by one before a plain search takes over


def has_dot_line(raw: bytes, end: int) -> bool:
    """Whether a line of ``raw[:end]`` starts with a dot.

    Searching for the dot alone runs at memchr speed through base64, which has none; a search for CRLF + dot
    stops at every line end. Past a few dots (headers, text), the plain search bounds the work.
    """
    if raw.startswith(b"."):
        return True
    pos = raw.find(b".", 0, end)
    for _ in range(DOT_PROBES):
        if pos == -1:
            return False
        if pos >= 2 and raw[pos - 2:pos] == b"\r\n":
            return True
        pos = raw.find(b".", pos + 1, end)
    return pos != -1 and raw.find(b"\r\n.", pos - 2, end) != -1


def find_end_of_data(data: bytearray, start: int) -> int:
    """Index of the first CRLF.CRLF at or after *start*, or -1; at memchr speed through base64 (see above)."""
    pos = data.find(b".", start + 2)
    for _ in range(DOT_PROBES):
        if pos == -1:
            return -1
        if data[pos - 2:pos + 3] == END_OF_DATA:
            return pos - 2
        pos = data.find(b".", pos + 1)
    return -1 if pos == -1 else data.find(END_OF_DATA, pos - 2)


def unstuff(raw: bytes) -> bytes:
    """Message content from the bytes between DATA and the final dot (which *raw* includes, after its CRLF).

    A leading dot is removed from every line that has one, as aiosmtpd does (RFC 5321 section 4.5.2).
    """
    end = len(raw) - 3  # drop ".\r\n"
    if not has_dot_line(raw, end):
        return raw[:end]  # the usual case (base64 lines never start with a dot): one scan, one copy
    body = b"\r\n" + raw[:end]  # the leading CRLF stands for the end of the DATA command line
    return body.replace(b"\r\n.", b"\r\n")[2:]


class CameraSMTP(SMTP):
    def __init__(self, handler: Any, server: SmtpServer, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._vmond_server = server
        self.in_data = False
        self.log = SessionLog("?")
        for name, method in list(self._smtp_methods.items()):
            self._smtp_methods[name] = self._recorded(name, method)

    def _recorded(self, name: str, method: Any) -> Any:
        async def call(arg: str | None) -> None:
            self.log.client(_shown_command(name, arg))
            await method(arg)

        return call

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None  # STARTTLS calls this again for the same session
        super().connection_made(transport)
        if first:
            assert self.session is not None
            self.log = SessionLog(peer_text(self.session.peer))
            self._vmond_server.sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        if self in self._vmond_server.sessions:
            self._vmond_server.sessions.discard(self)
            self._vmond_server.session_ended(self.log)
        super().connection_lost(error)

    async def push(self, status: Any) -> None:
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else str(status)
        self.log.server(text)
        self._vmond_server.metrics.smtp_reply(text)
        await super().push(status)

    def data_received(self, data: bytes) -> None:
        if self.in_data:
            self._reset_timeout()  # a big mail on a slow link is not an idle session
        super().data_received(data)

    async def _handle_client(self) -> None:
        assert self.session is not None
        if not self._vmond_server.peer_allowed(self.session.peer):
            log.warning("refused SMTP connection from %s: not in smtp.allow_networks", peer_text(self.session.peer))
            await self.push(Reply.NETWORK_REFUSED)
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()

    async def smtp_AUTH(self, arg: str) -> None:
        # Cameras send "auth login" in any case, and some send AUTH after falling back to HELO.
        assert self.session is not None
        if arg:
            mechanism, _, rest = arg.partition(" ")
            arg = f"{mechanism.upper()} {rest}".rstrip()
        if self.session.host_name and not self.session.extended_smtp:
            self.session.extended_smtp = True
            try:
                await super().smtp_AUTH(arg)
            finally:
                self.session.extended_smtp = False
        else:
            await super().smtp_AUTH(arg)

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push(Reply.NEED_RCPT)
            return
        if arg:
            await self.push(Reply.DATA_SYNTAX)
            return
        await self.push(Reply.START_DATA)
        self.in_data = True
        try:
            try:
                async with asyncio.timeout(DATA_DEADLINE):
                    raw = await self._read_data()
            except TimeoutError:
                # A trickle that never ends (a slowloris, or a camera's dying link) must not hold a slot forever.
                self.log.client("<message not finished in time>")
                await self.push(Reply.DATA_TIMEOUT)
                assert self.transport is not None
                self.transport.close()
                return
            crashpoint("after_data_read")
            self.log.client(f"<message of {len(raw) - 3} bytes>" if raw is not None
                            else "<message over the size limit, discarded>")
            if raw is None:
                status = Reply.TOO_BIG.format(limit=self.data_size_limit)
            else:
                content = unstuff(raw)
                self.envelope.content = self.envelope.original_content = content
                status = await self._call_handler_hook("DATA")
                if status is MISSING:
                    status = Reply.LOCAL_ERROR  # no handler: never claim the mail is safe
        finally:
            self.in_data = False
            self._set_post_data_state()
        if status.startswith("250"):
            crashpoint("before_250")
        await self.push(status)
        if status.startswith("250"):
            crashpoint("after_250")
        if self._vmond_server.stopping:
            self.goodbye()

    async def _read_data(self) -> bytes | None:
        """The bytes up to and including the final ".\\r\\n"; None when the message exceeded the size limit.

        Too big means what it means to stock aiosmtpd (its ``readuntil`` limit): the terminator starts more than
        ``data_size_limit`` bytes after the DATA line, dot-stuffing included. Past that, what arrives is dropped
        as it comes, so memory stays bounded by the limit and one read.
        """
        reader = self._reader
        limit = self.data_size_limit or 2**62
        # The CRLF that ended the DATA command line counts for the terminator of an empty message.
        data = bytearray(b"\r\n")
        dropped = 0  # bytes discarded from the front of ``data`` once the message was over the limit
        searched = 0  # no terminator starts before this index of ``data``
        # The reader's limit is aiosmtpd's line length, and it pauses the socket at twice that: widen it while in
        # DATA, or a megabyte arrives in kilobyte reads. (aiosmtpd reaches into the reader the same way.)
        saved_limit = reader._limit  # type: ignore[attr-defined]
        reader._limit = READ_CHUNK  # type: ignore[attr-defined]
        try:
            while True:
                found = find_end_of_data(data, searched)
                if found != -1:
                    break
                searched = max(0, len(data) - len(END_OF_DATA) + 1)
                if dropped + searched > limit:  # no terminator can start within the limit any more
                    dropped += searched
                    del data[:searched]
                    searched = 0
                chunk = await reader.read(READ_CHUNK)
                if not chunk:
                    raise asyncio.IncompleteReadError(bytes(data), None)
                data += chunk
        finally:
            reader._limit = saved_limit  # type: ignore[attr-defined]
        end = found + len(END_OF_DATA)
        if end < len(data):  # a client that pipelines sent its next command with the data: keep it for aiosmtpd
            reader._buffer[0:0] = data[end:]  # type: ignore[attr-defined]
        if dropped + found > limit:
            return None
        with memoryview(data) as view:
            return bytes(view[2:end])  # one copy, without the CRLF put in front

    # AUTH PLAIN and LOGIN as aiosmtpd has them, but the credential check is awaited (a stored password hash is
    # verified on a thread) instead of aiosmtpd's synchronous authenticator call.
    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await self.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False)
        else:
            try:
                blob = base64.b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        try:
            _authzid, login, password = blob.split(b"\0")
        except ValueError:
            await self.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._vmond_server.authenticate(self, LoginPassword(login, password))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await self.challenge_auth(self.AuthLoginUsernameChallenge)
            if login is MISSING:
                return AuthResult(success=False)
        else:
            try:
                login = base64.b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False)
        return await self._vmond_server.authenticate(self, LoginPassword(login, password))

    def goodbye(self) -> None:
        """Tell the client we are going away (421) and close, without waiting for it."""
        if self.transport is not None and not self.transport.is_closing():
            self._writer.write(Reply.SHUTTING_DOWN.encode() + b"\r\n")
            self.transport.close()


class RefuseConnection(asyncio.Protocol):
    """Answers one line and hangs up: for connections beyond ``smtp.max_connections``, or while stopping."""

    def __init__(self, reply: str) -> None:
        self._reply = reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self._reply.encode() + b"\r\n")
        transport.close()
