"""The SMTP door: aiosmtpd hosted in the daemon's own event loop, answering cameras honestly and fast.

250 is sent only once the message is durable in the spool. Every failure before that point is a 4xx, so the
camera keeps its alarm and retries; aiosmtpd's default for an unexpected exception is a permanent 500, which
makes cameras drop the alarm, hence :meth:`IngestHandler.handle_exception`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword
from aiosmtpd.smtp import Session as SmtpSession

from vmond.config.tls import server_context
from vmond.ingest.replies import Reply
from vmond.ingest.smtpguard import LoginGuard
from vmond.ingest.smtpsession import CameraSMTP, RefuseConnection
from vmond.ingest.spool import InsufficientStorage, Spool, SpoolEnvelope
from vmond.ingest.transcript import LOGIN_NAME_LIMIT, SessionLog, peer_text, printable
from vmond.store.cameras import record_sessions
from vmond.store.refusals import add_refusal
from vmond.util.logguard import keep_quiet
from vmond.util.ratelimit import TokenBucket

if TYPE_CHECKING:
    from vmond.config import Config
    from vmond.ingest.cameras import CameraDirectory
    from vmond.store.db import Database
    from vmond.util.metrics import Metrics

log = logging.getLogger(__name__)
# aiosmtpd logs every command line at DEBUG, AUTH's base64 credentials too; what it says at INFO is chatter.
keep_quiet("mail.log", logging.WARNING)

TRANSCRIPT_BATCH = 1.0  # seconds between writes of the installer's session transcripts
# Connections the kernel queues before vmond accepts them (asyncio's default is 100). A burst of cameras beyond the
# queue is dropped at the TCP handshake (with SYN cookies a client may even believe it is connected and wait for
# a greeting that never comes); past max_connections each gets a prompt 421 instead.
LISTEN_BACKLOG = 512


class IngestHandler:
    """aiosmtpd handler hooks: recipient check, spooling, and honest failure replies."""

    def __init__(self, config: Config, directory: CameraDirectory, spool: Spool, db: Database,
                 io_executor: Executor, on_spooled: Callable[[str], None],
                 on_low_disk: Callable[[], None] | None = None) -> None:
        self._config = config
        self._on_low_disk = on_low_disk
        self._directory = directory
        self._spool = spool
        self._db = db
        self._io = io_executor
        self._on_spooled = on_spooled
        self._refusal_budget = TokenBucket(rate=5.0, burst=50)
        # Ended sessions waiting for the next batch write (bounded: the oldest go first in a flood).
        self._sessions: deque[SessionLog] = deque(maxlen=1000)
        self._flusher: asyncio.Task[None] | None = None
        self.storage_refused_at: float | None = None
        self.accepted = 0
        self.refused = 0

    async def handle_RCPT(self, server: CameraSMTP, session: SmtpSession, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        camera = self._directory.lookup(address)
        if camera is None:
            reply = Reply.UNKNOWN_RECIPIENT.format(address=address)
            await self._remember_refusal(session, envelope, address, reply)
            return reply
        if self._config.smtp.auth == "per-camera" and session.auth_data != camera:
            server.log.concerns(camera.id)
            reply = Reply.WRONG_CAMERA.format(address=address)
            await self._remember_refusal(session, envelope, address, reply)
            return reply
        server.log.accepted_recipient(camera.id)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return Reply.RECIPIENT_OK

    async def _remember_refusal(self, session: SmtpSession, envelope: Envelope, address: str, reply: str) -> None:
        self.refused += 1
        log.info("%s refused recipient %s (from %s)", peer_text(session.peer), address, envelope.mail_from)
        if not self._refusal_budget.take():
            return  # a flood of bad recipients must not turn into a flood of writes
        try:
            await self._db.write(add_refusal, peer_text(session.peer), str(envelope.mail_from or ""), address, reply)
        except Exception:
            log.exception("could not record an SMTP refusal")

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        content = envelope.original_content
        assert isinstance(content, bytes)
        spool_envelope = SpoolEnvelope(
            received_at=datetime.now(UTC).isoformat(),
            peer=peer_text(session.peer),
            mail_from=printable(str(envelope.mail_from or "")),
            rcpt_tos=tuple(envelope.rcpt_tos),
            helo=printable(session.host_name or "") or None,
            auth_user=_auth_user(session.auth_data),
            tls=session.ssl is not None
            or (server.transport is not None and server.transport.get_extra_info("sslcontext") is not None),
        )
        loop = asyncio.get_running_loop()
        try:
            name = await loop.run_in_executor(self._io, self._spool.store_sync, content, spool_envelope)
        except InsufficientStorage:
            self.storage_refused_at = time.monotonic()
            log.warning("refusing mail from %s: free space below storage.min_free_space", spool_envelope.peer)
            if self._on_low_disk is not None:
                self._on_low_disk()  # the disk keeper makes room from the oldest closed events
            return Reply.INSUFFICIENT_STORAGE
        except Exception:
            log.exception("could not spool mail from %s; the camera will retry", spool_envelope.peer)
            return Reply.LOCAL_ERROR
        self.accepted += 1
        log.info("%s accepted %d bytes for %s as %s", spool_envelope.peer, len(content),
                 ", ".join(envelope.rcpt_tos), name)
        self._on_spooled(name)
        return Reply.QUEUED.format(name=name)

    def refusing_for_space(self, within: float = 60.0) -> bool:
        """Whether the door answered 452 (no room) lately: what the dashboard and /api/health report."""
        return self.storage_refused_at is not None and time.monotonic() - self.storage_refused_at < within

    def session_ended(self, session_log: SessionLog) -> None:
        """Keep the transcript for the cameras the session named. Written in batches about once a second: one
        transaction for many sessions, instead of an fsynced commit per connection on the single writer."""
        if not session_log.cameras:
            return
        self._sessions.append(session_log)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(TRANSCRIPT_BATCH)
        await self.flush()

    async def close(self) -> None:
        """At shutdown: write what is waiting now instead of a second from now."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()

    async def flush(self) -> None:
        """Write the sessions that ended since the last batch."""
        batch = [(sorted(s.cameras), s.transcript(), s.refusals) for s in self._sessions]
        self._sessions.clear()
        if batch:
            try:
                await self._db.write(record_sessions, batch)
            except Exception:
                log.exception("could not record %d SMTP session(s) for the installer's view", len(batch))

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error: %s: %s", type(error).__name__, error, exc_info=error)
        return Reply.LOCAL_ERROR


def _auth_user(auth_data: Any) -> str | None:
    """Who the client authenticated as: the login it gave (accept-any) or the camera it proved to be (per-camera)."""
    if isinstance(auth_data, LoginPassword):
        return printable(auth_data.login.decode("utf-8", "replace"))
    local_part = getattr(auth_data, "local_part", None)
    return None if local_part is None else str(local_part)


class _QuietLoginData(logging.Filter):
    """aiosmtpd warns about its own use of a deprecated attribute at every AUTH; that is not news to anyone."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


def quiet_aiosmtpd_logging() -> None:
    """aiosmtpd narrates every command at INFO and repeats a deprecation notice at every AUTH."""
    aiosmtpd_log = logging.getLogger("mail.log")
    aiosmtpd_log.setLevel(logging.WARNING)
    aiosmtpd_log.addFilter(_QuietLoginData())


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The server context for STARTTLS and implicit TLS, or None without a certificate."""
    tls = config.smtp.tls
    return None if tls.certificate is None else server_context(tls.certificate, tls.key, tls.min_version)


class SmtpServer:
    """The listening socket and its sessions, as an async context (graceful stop on exit)."""

    def __init__(self, config: Config, handler: IngestHandler, directory: CameraDirectory, metrics: Metrics,
                 stop_grace: float = 10.0) -> None:
        self._config = config
        self.metrics = metrics
        self._handler = handler
        self._directory = directory
        self._networks = tuple(config.smtp.allow_networks)
        self._stop_grace = stop_grace
        self._servers: list[asyncio.AbstractServer] = []
        self._tls = tls_context(config)
        self.sessions: set[CameraSMTP] = set()
        self._per_peer: Counter[str] = Counter()  # sessions per client address (only addresses with sessions)
        self.logins = LoginGuard()
        self.stopping = False
        self.port = 0
        self.implicit_tls_port = 0

    def peer_allowed(self, peer: Any) -> bool:
        try:
            address = ipaddress.ip_address(peer[0].split("%", 1)[0])
        except (TypeError, ValueError, IndexError):
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)

    def admit(self, session: CameraSMTP) -> str | None:
        """Count *session* in, or the reply that turns it away. Called from its connection_made: the check and the
        count happen in one step on the loop thread, so the limits hold exactly."""
        smtp = self._config.smtp
        if self.stopping:
            return Reply.SHUTTING_DOWN
        if len(self.sessions) >= smtp.max_connections:
            return Reply.TOO_MANY_CONNECTIONS
        if self._per_peer[session.address] >= smtp.max_connections_per_peer:
            return Reply.TOO_MANY_FROM_PEER.format(limit=smtp.max_connections_per_peer)
        self.sessions.add(session)
        self._per_peer[session.address] += 1
        return None

    def release(self, session: CameraSMTP) -> None:
        """The session ended: free its slot and keep its transcript."""
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        self._per_peer[session.address] -= 1
        if self._per_peer[session.address] <= 0:
            del self._per_peer[session.address]
        self._handler.session_ended(session.log)

    def auth_throttled(self, address: str) -> bool:
        """Whether AUTH from *address* gets 454 for now (too many failed logins; only passwords can be guessed)."""
        return self._config.smtp.auth == "per-camera" and self.logins.throttled(address)

    async def authenticate(self, server: CameraSMTP, credentials: LoginPassword) -> AuthResult:
        """The AUTH decision for ``smtp.auth``: accept-any takes anything; per-camera checks the camera's password,
        counting the attempt against the client's address before the check (see :mod:`vmond.ingest.smtpguard`)."""
        mode = self._config.smtp.auth
        if mode == "accept-any":
            return AuthResult(success=True, auth_data=credentials, message=Reply.AUTH_OK)
        if mode == "per-camera":
            attempt = self.logins.reserve(server.address)
            if attempt is None:
                return AuthResult(success=False, handled=False, message=Reply.AUTH_THROTTLED)
            username = credentials.login.decode("utf-8", "replace")
            claimed = self._directory.by_username(username)
            if claimed is not None:
                server.log.concerns(claimed.id)  # a camera with a wrong password: its installer wants to know
            camera = await self._directory.verify(username, credentials.password.decode("utf-8", "replace"))
            if camera is not None:
                self.logins.succeeded(server.address, attempt)
                return AuthResult(success=True, auth_data=camera, message=Reply.AUTH_OK)
            reason = ("unknown_name" if claimed is None else
                      "wrong_password" if self._directory.has_password(claimed) else "no_password")
            self.logins.failed(server.address, printable(username)[:LOGIN_NAME_LIMIT], reason,
                               None if claimed is None else (claimed.id, claimed.name))
        # handled=False: aiosmtpd then sends 535 itself; handled=True would leave the client waiting.
        return AuthResult(success=False, handled=False)

    def _protocol(self, implicit_tls: bool = False) -> asyncio.BaseProtocol:
        smtp = self._config.smtp
        if self.stopping or len(self.sessions) >= smtp.max_connections:
            # A cheap answer when already full; the exact count is kept in CameraSMTP.connection_made (admit).
            reply = Reply.SHUTTING_DOWN if self.stopping else Reply.TOO_MANY_CONNECTIONS
            self.metrics.smtp_reply(reply)
            return RefuseConnection(reply)
        return CameraSMTP(
            self._handler,
            self,
            hostname=smtp.domain,  # never let aiosmtpd call the blocking socket.getfqdn() per connection
            ident="vmond",
            data_size_limit=smtp.max_message_size,
            idle_timeout=smtp.idle_timeout,  # only progress towards a mail restarts it
            # Camera names in envelope addresses arrive in UTF-8 (and worse) with or without SMTPUTF8.
            enable_SMTPUTF8=True,
            camera_auth_required=smtp.auth == "per-camera",
            auth_require_tls=smtp.auth == "off",  # off: AUTH is not offered on plain connections
            # STARTTLS on the plain listener; a session that began in TLS needs no upgrade.
            tls_context=None if implicit_tls else self._tls,
        )

    def _say_how_cameras_log_in(self) -> None:
        """Once at start-up, what per-camera logins mean here (instead of aiosmtpd's warning per session)."""
        smtp = self._config.smtp
        if smtp.auth != "per-camera":
            return
        if self._tls is None:
            log.warning("smtp.auth is per-camera without smtp.tls: camera passwords travel in clear text on the "
                        "LAN (set a certificate to offer STARTTLS and implicit TLS, e.g. port 465)")
        else:
            log.warning("smtp.auth is per-camera: camera passwords travel in clear text unless the camera uses "
                        "STARTTLS%s", f" or implicit TLS on port {self.implicit_tls_port}"
                        if self.implicit_tls_port else " (or set smtp.tls.implicit_tls_listen, e.g. port 465)")
        missing = self._directory.without_password()
        if missing:
            names = ", ".join(f"{c.name} ({c.local_part})" for c in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            log.warning("smtp.auth is per-camera, but %d camera(s) have no SMTP password, so their mail is refused "
                        "until one is set on the camera's page: %s%s", len(missing), names, more)

    async def __aenter__(self) -> SmtpServer:
        loop = asyncio.get_running_loop()
        host, port = self._config.smtp.listen
        server = await loop.create_server(self._protocol, host or None, port, reuse_address=True,
                                          backlog=LISTEN_BACKLOG)
        self._servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        log.info("SMTP listening on %s:%d for *@%s%s", host or "*", self.port, self._config.smtp.domain,
                 " (STARTTLS offered)" if self._tls else "")
        implicit = self._config.smtp.tls.implicit_tls_listen
        if implicit is not None and self._tls is not None:
            server = await loop.create_server(functools.partial(self._protocol, True), implicit.host or None,
                                              implicit.port, ssl=self._tls, reuse_address=True,
                                              backlog=LISTEN_BACKLOG)
            self._servers.append(server)
            self.implicit_tls_port = server.sockets[0].getsockname()[1]
            log.info("SMTP with implicit TLS listening on %s:%d", implicit.host or "*", self.implicit_tls_port)
        self._say_how_cameras_log_in()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop accepting; idle sessions get 421 now, sessions inside DATA may finish within the grace time."""
        if not self._servers:
            return
        self.stopping = True
        for server in self._servers:
            server.close()
        for session in list(self.sessions):
            if not session.in_data:
                session.goodbye()
        deadline = time.monotonic() + self._stop_grace
        while any(s.in_data for s in self.sessions) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            session.goodbye()
        # Give the transports a moment to flush the 421 and report connection_lost.
        for _ in range(40):
            if not self.sessions:
                break
            await asyncio.sleep(0.025)
        self._servers = []
        await self._handler.close()
        log.info("SMTP stopped (%d accepted, %d recipients refused)", self._handler.accepted, self._handler.refused)
