"""One SMTP session: aiosmtpd's protocol with what real cameras need, and no more than its share of the door.

- DATA is read in large chunks up to ``<CR><LF>.<CR><LF>`` instead of aiosmtpd's line-at-a-time loop: a
  camera's 1 MB of base64 is a few reads, not ten thousand awaits, and a line longer than RFC 5321's 1,000
  octets (or bare LF line ends, as some camera firmware sends) is accepted instead of earning a permanent 500
  that would lose the alarm. Only CRLF.CRLF ends the data (a bare ``\\n.\\n`` does not: aiosmtpd's
  SMTP-smuggling fix), dot-unstuffing is that of aiosmtpd (byte-identical content), and the size limit is
  enforced while reading: past ``max_message_size`` the rest is discarded as it arrives, then 552.
- AUTH works after HELO and with lower-case mechanism names.
- Admission is decided in ``connection_made``, where the session is also counted: ``smtp.max_connections`` in
  all and ``smtp.max_connections_per_peer`` per client address hold exactly, however many connect at once.
- Peers outside ``smtp.allow_networks`` get 554 before anything else.
- Only progress towards a mail (MAIL, RCPT, DATA and its data, AUTH, STARTTLS) restarts the idle timer: NOOP,
  RSET, HELO/EHLO and the like do not, so a session cannot hold its slot by chatting. A session gets at most
  :data:`MAX_COMMANDS` commands and :data:`MAX_AUTH_FAILURES` failed logins, then 421 and the door closes.
- The server can end idle sessions with 421 when it stops.
- Each session keeps a short transcript (secrets and message content left out, see
  :mod:`vmond.ingest.transcript`) for the installer: which cameras it named, what it said, its last refusal.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword

from vmond.ingest.replies import Reply
from vmond.ingest.smtpinternals import command_reader, reading_limit, unread
from vmond.ingest.transcript import SessionLog, login_name, login_name_of, peer_text, shown_command
from vmond.util.crashpoints import crashpoint
from vmond.util.ratelimit import peer_ip

if TYPE_CHECKING:
    from vmond.ingest.smtp import SmtpServer

log = logging.getLogger(__name__)

END_OF_DATA = b"\r\n.\r\n"
READ_CHUNK = 256 * 1024  # bytes asked of the stream reader at once while in DATA
DATA_DEADLINE = 600.0  # seconds for one message's DATA, however steadily it trickles in
# A camera sends about eight commands per mail; a hundred let an NVR send a dozen mails in one session. Past it
# the client gets 421 (temporary) and reconnects: nothing is lost, but no session can chat forever.
MAX_COMMANDS = 100
MAX_AUTH_FAILURES = 3  # failed AUTH commands in one session before it is closed
PROGRESS_COMMANDS = frozenset({"MAIL", "RCPT", "DATA", "AUTH", "STARTTLS"})  # these restart the idle timer


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


Command = Callable[["CameraSMTP", str | None], Awaitable[None]]


def _counted(verb: str, method: Command) -> Command:
    """*method* (``smtp_<verb>``) behind the session's command budget, idle timer and transcript."""
    async def command(self: CameraSMTP, arg: str | None) -> None:
        if await self.before_command(verb, arg):
            await method(self, arg)

    command.__qualname__ = f"CameraSMTP.smtp_{verb}"
    return command


def _every_command_counted(cls: type[CameraSMTP]) -> type[CameraSMTP]:
    """Wrap every ``smtp_<COMMAND>`` method of *cls*, its own and those it inherits: aiosmtpd dispatches each
    command it reads to the method of that name (its documented way to add or override commands), so none can
    pass the budget, whatever a newer aiosmtpd adds. The wrappers carry no ``@syntax`` text: HELP names no
    commands, which no camera asks for."""
    for name in dir(cls):
        method = getattr(cls, name)
        if name.startswith("smtp_") and inspect.iscoroutinefunction(method):
            setattr(cls, name, _counted(name.removeprefix("smtp_"), method))
    return cls


@_every_command_counted
class CameraSMTP(SMTP):
    def __init__(self, handler: Any, server: SmtpServer, *, idle_timeout: float,
                 camera_auth_required: bool = False, **kwargs: Any) -> None:
        # aiosmtpd's own auth_required is left off: with it, aiosmtpd logs a warning about plain-text AUTH for
        # every session. :meth:`check_auth_needed` enforces ours; the server says it once at start-up.
        # aiosmtpd's idle timer restarts at every command, chatter included, and not while DATA streams in: it
        # gets a backstop longer than any gap between two commands that ours allows, and ours decides.
        super().__init__(handler, timeout=2 * (idle_timeout + DATA_DEADLINE), **kwargs)
        self._vmond_server = server
        self._camera_auth_required = camera_auth_required
        self._idle_timeout = idle_timeout
        self._idle_timer: asyncio.TimerHandle | None = None
        self.in_data = False
        self._refused = False  # turned away in connection_made: aiosmtpd never starts
        self.address = "?"  # the client's IP address, the key of the per-address limits
        self._commands = 0
        self._auth_failures = 0
        self.log = SessionLog("?")

    async def before_command(self, verb: str, arg: str | None) -> bool:
        """Count the command, restart the idle timer if it is progress, and note it in the transcript; False
        when the session is over its command budget (it has been answered 421 and closed)."""
        self._commands += 1
        if self._commands > MAX_COMMANDS:
            await self.close_with(Reply.TOO_MANY_COMMANDS)
            return False
        if verb in PROGRESS_COMMANDS:
            self.made_progress()
        self.log.client(shown_command(verb, arg))
        return True

    # --- admission and the idle timer -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None  # STARTTLS calls this again for the same session
        if first:
            peer = transport.get_extra_info("peername")
            self.address = peer_ip(peer)
            # Checked and counted in one step on the loop thread: the limits hold exactly. (In the protocol
            # factory the count would lag behind, as asyncio accepts a batch of connections before any
            # connection_made runs.)
            refusal = self._vmond_server.admit(self)
            if refusal is None and not self._vmond_server.peer_allowed(peer):
                # Counted in and out again, so that a full door still answers 421 first, as it always has.
                log.warning("refused SMTP connection from %s: not in smtp.allow_networks", peer_text(peer))
                self._vmond_server.release(self)
                refusal = Reply.NETWORK_REFUSED
            if refusal is not None:
                self._refused = True
                self._vmond_server.metrics.smtp_reply(refusal)
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(refusal.encode() + b"\r\n")
                transport.close()
                return
        super().connection_made(transport)
        if first:
            assert self.session is not None
            self.log = SessionLog(peer_text(self.session.peer))
            self.made_progress()  # starts the idle timer

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return  # aiosmtpd never started on this connection
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._vmond_server.release(self)
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        return False if self._refused else super().eof_received()

    def made_progress(self) -> None:
        """A step towards delivering a mail: the session is not idle. Only progress restarts the idle timer
        (aiosmtpd's restarts at every command, NOOP and RSET too, and is only a backstop here)."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = self.loop.call_later(self._idle_timeout, self._idle_timed_out)

    def _idle_timed_out(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def close_with(self, reply: str) -> None:
        """Answer *reply* (a 421) and hang up."""
        if self.transport is not None and not self.transport.is_closing():
            await self.push(reply)
            self.transport.close()

    async def push(self, status: Any) -> None:
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else str(status)
        self.log.server(text)
        self._vmond_server.metrics.smtp_reply(text)
        await super().push(status)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self.in_data:
            self.made_progress()  # a big mail on a slow link is not an idle session
        super().data_received(data)

    # --- AUTH ---------------------------------------------------------------------------------------------

    async def check_auth_needed(self, caller_method: str) -> bool:
        assert self.session is not None
        if self._camera_auth_required and not self.session.authenticated:
            await self.push(Reply.AUTH_REQUIRED)
            return True
        return False

    async def smtp_AUTH(self, arg: str) -> None:
        assert self.session is not None
        if arg and not self.session.authenticated and self._vmond_server.auth_throttled(self.address):
            await self.push(Reply.AUTH_THROTTLED)  # before any challenge: no password need cross the wire
        else:
            await self._auth(arg)
        if not self.session.authenticated:
            self._auth_failures += 1
            if self._auth_failures >= MAX_AUTH_FAILURES:
                log.info("%s: %d failed AUTH commands in one session, closing it", self.address,
                         self._auth_failures)
                await self.close_with(Reply.TOO_MANY_AUTH_FAILURES)

    async def _auth(self, arg: str) -> None:
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
                # The handler hook as aiosmtpd calls it; without one, never claim the mail is safe.
                hook = getattr(self.event_handler, "handle_DATA", None)
                status = Reply.LOCAL_ERROR if hook is None else await hook(self, self.session, self.envelope)
        finally:
            self.in_data = False
            self.envelope = Envelope()  # the next mail starts afresh (aiosmtpd's state after DATA)
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
        reader = command_reader(self)
        limit = self.data_size_limit or 2**62
        # The CRLF that ended the DATA command line counts for the terminator of an empty message.
        data = bytearray(b"\r\n")
        dropped = 0  # bytes discarded from the front of ``data`` once the message was over the limit
        searched = 0  # no terminator starts before this index of ``data``
        # The reader's limit is aiosmtpd's line length, and it pauses the socket at twice that: widen it while in
        # DATA, or a megabyte arrives in kilobyte reads.
        with reading_limit(reader, READ_CHUNK):
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
        end = found + len(END_OF_DATA)
        # A client that pipelines sent its next command with the data: keep it for aiosmtpd.
        unread(reader, data[end:])
        if dropped + found > limit:
            return None
        with memoryview(data) as view:
            return bytes(view[2:end])  # one copy, without the CRLF put in front

    # AUTH PLAIN and LOGIN as aiosmtpd has them, but the credential check is awaited (a stored password hash is
    # verified on a thread) instead of aiosmtpd's synchronous authenticator call, and the client's answers to
    # the challenges go into the transcript as what they are (a name, a password), never as sent.
    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await self._challenge(b"", "PLAIN", "credentials")
            if blob is None:
                return AuthResult(success=False, handled=True)
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
            login = await self._challenge(self.AuthLoginUsernameChallenge.encode(), "LOGIN", "user name")
            if login is None:
                return AuthResult(success=False, handled=True)
        else:
            try:
                login = base64.b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        password = await self._challenge(self.AuthLoginPasswordChallenge.encode(), "LOGIN", "password")
        if password is None:
            return AuthResult(success=False, handled=True)
        return await self._vmond_server.authenticate(self, LoginPassword(login, password))

    async def _challenge(self, challenge: bytes, mechanism: str, part: str) -> bytes | None:
        """aiosmtpd's ``challenge_auth`` (RFC 4954: 334, the answer in base64, ``*`` aborts), with the answer
        recorded in the transcript as *part* before the reply to it. None when the client aborted or sent no
        base64 (a 501 has been sent)."""
        await self.push(b"334 " + base64.b64encode(challenge))
        line = (await command_reader(self).readline()).strip()
        if line == b"*":
            self.log.lines.append("C: *")
            await self.push("501 5.7.0 Auth aborted")
            return None
        try:
            blob = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            self.log.auth_response(mechanism, "password" if part == "password" else "answer")
            await self.push("501 5.5.2 Can't decode base64")
            return None
        name = None if part == "password" else login_name(blob) if part == "user name" else login_name_of(blob,
                                                                                                          mechanism)
        self.log.auth_response(mechanism, part, name)
        return blob

    def goodbye(self) -> None:
        """Tell the client we are going away (421) and close, without waiting for it."""
        if self.transport is not None and not self.transport.is_closing():
            cast(asyncio.WriteTransport, self.transport).write(Reply.SHUTTING_DOWN.encode() + b"\r\n")
            self.transport.close()


class RefuseConnection(asyncio.Protocol):
    """Answers one line and hangs up: for connections beyond ``smtp.max_connections``, or while stopping."""

    def __init__(self, reply: str) -> None:
        self._reply = reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self._reply.encode() + b"\r\n")
        transport.close()
