"""One host must not block the cameras' mail: exact connection limits, per client address, and an idle timeout that
chatting does not reset. Real sockets on loopback; 127.0.0.x source addresses stand for different hosts."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import pytest
from conftest import sample, send_data
from helpers import wait_until
from rawsmtp import RawSession

from vmond.config import Config
from vmond.daemon import running
from vmond.ingest.smtpsession import MAX_COMMANDS


def _greetings(port: int, count: int, source: str = "127.0.0.1") -> tuple[list[socket.socket], list[bytes]]:
    """*count* connections started at once (non-blocking connects), then the first line each got."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind((source, 0))
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    firsts = []
    for sock in socks:
        sock.settimeout(30)
        firsts.append(sock.recv(300))
    return socks, firsts


def _close(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def _deliver_from(port: int, source: str) -> int:
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, timeout=20, source_address=(source, 0)) as client:
        client.ehlo("camera")
        client.mail("cam@cam.lan")
        code, _ = client.rcpt("camera-front@monitor.local")
        assert code == 250
        return send_data(client, sample("swann-nvr-human.eml"))[0]


async def test_max_connections_is_exact_under_a_burst(make_config: Callable[..., Config]) -> None:
    config = make_config(smtp={"listen": "127.0.0.1:0", "domain": "monitor.local", "max_connections": 64,
                               "max_connections_per_peer": 64})
    async with running(config) as services:
        socks, firsts = await asyncio.to_thread(_greetings, services.smtp.port, 300)
        try:
            served = [first for first in firsts if first.startswith(b"220 ")]
            refused = [first for first in firsts if first.startswith(b"421 4.7.0 Too many connections,")]
            assert len(served) == 64 and len(refused) == 236, (len(served), len(refused))
            assert len(services.smtp.sessions) == 64
        finally:
            _close(socks)
        await wait_until(lambda: not services.smtp.sessions, timeout=10, what="no session left")


async def test_one_address_gets_at_most_its_share(make_config: Callable[..., Config]) -> None:
    config = make_config(smtp={"listen": "127.0.0.1:0", "domain": "monitor.local", "max_connections": 20,
                               "max_connections_per_peer": 4})
    async with running(config) as services:
        port = services.smtp.port
        hog, firsts = await asyncio.to_thread(_greetings, port, 50, "127.0.0.2")
        other, other_firsts = await asyncio.to_thread(_greetings, port, 4, "127.0.0.3")
        try:
            assert sum(first.startswith(b"220 ") for first in firsts) == 4
            refusals = {first for first in firsts if not first.startswith(b"220 ")}
            assert refusals == {b"421 4.7.0 Too many connections from your address (at most 4), try again later\r\n"}
            assert all(first.startswith(b"220 ") for first in other_firsts)  # another host is not affected
            assert await asyncio.to_thread(_deliver_from, port, "127.0.0.4") == 250  # nor is a camera
            for sock, first in zip(hog, firsts, strict=True):
                if first.startswith(b"220 "):
                    sock.close()
                    break
            await wait_until(lambda: len(services.smtp.sessions) == 7, timeout=10, what="seven sessions")
            again, again_firsts = await asyncio.to_thread(_greetings, port, 2, "127.0.0.2")
            hog += again
            assert [first[:4] for first in again_firsts] == [b"220 ", b"421 "]  # the freed slot, and no more
        finally:
            _close(hog + other)


def _chat_until_closed(port: int, command: str, every: float, limit: float) -> float:
    """Send *command* every *every* seconds until the server hangs up; seconds until then (or *limit*)."""
    session = RawSession(port, source="127.0.0.2")
    started = time.monotonic()
    try:
        session.cmd("EHLO chatter")
        while time.monotonic() - started < limit:
            try:
                session.cmd(command)
            except (ConnectionError, OSError):
                break
            time.sleep(every)
        return time.monotonic() - started
    finally:
        session.close()


async def test_noop_rset_and_helo_do_not_keep_a_session_alive(make_config: Callable[..., Config]) -> None:
    config = make_config(smtp={"listen": "127.0.0.1:0", "domain": "monitor.local", "idle_timeout": "2s"})
    async with running(config) as services:
        port = services.smtp.port
        chatters = [asyncio.to_thread(_chat_until_closed, port, command, 0.3, 10.0)
                    for command in ("NOOP", "RSET", "HELO chatter", "EHLO chatter")]
        camera = asyncio.to_thread(_deliver_from, port, "127.0.0.5")
        *lasted, delivered = await asyncio.gather(*chatters, camera)
        assert delivered == 250  # a real camera still delivers meanwhile
        assert all(1.5 < seconds < 5 for seconds in lasted), lasted  # closed at the idle timeout, not kept open


def _mail_steps(port: int, steps: int, every: float) -> list[str]:
    """A slow but progressing sender: one envelope command every *every* seconds."""
    session = RawSession(port)
    try:
        replies = [session.cmd("EHLO camera")]
        for step in range(steps):
            replies.append(session.cmd("MAIL FROM:<cam@cam.lan>" if step == 0 else
                                       "RCPT TO:<camera-front@monitor.local>"))
            time.sleep(every)
        return replies
    finally:
        session.close()


async def test_progress_restarts_the_idle_timer(make_config: Callable[..., Config]) -> None:
    config = make_config(smtp={"listen": "127.0.0.1:0", "domain": "monitor.local", "idle_timeout": "2s"})
    async with running(config) as services:
        replies = await asyncio.to_thread(_mail_steps, services.smtp.port, 6, 0.8)  # 4.8 s in all, 0.8 s apart
        assert all(reply.startswith("250") for reply in replies), replies


def _trickle(port: int, pieces: int, every: float) -> tuple[str, str]:
    """One mail whose data arrives in *pieces* writes *every* seconds apart; the DATA reply and a NOOP's."""
    session = RawSession(port)
    try:
        session.cmd("EHLO camera")
        session.cmd("MAIL FROM:<cam@cam.lan>")
        session.cmd("RCPT TO:<camera-front@monitor.local>")
        assert session.cmd("DATA").startswith("354")
        wire = b"Subject: slow link\r\n\r\n" + b"A" * 76 * pieces + b"\r\n.\r\n"
        size = -(-len(wire) // pieces)
        for start in range(0, len(wire), size):
            session.send(wire[start:start + size])
            time.sleep(every)
        return session.reply(), session.cmd("NOOP")
    finally:
        session.close()


async def test_data_arriving_slowly_is_progress(make_config: Callable[..., Config]) -> None:
    """A mail on a slow link takes longer than the idle timeout without being idle: its data restarts the timer
    (and no other timer, aiosmtpd's included, ends the session meanwhile)."""
    config = make_config(smtp={"listen": "127.0.0.1:0", "domain": "monitor.local", "idle_timeout": "1s"})
    async with running(config) as services:
        data, noop = await asyncio.to_thread(_trickle, services.smtp.port, 8, 0.4)  # 3.2 s in all, 0.4 s apart
        assert data.startswith("250"), data
        assert noop.startswith("250"), noop


def _many_commands(port: int, count: int) -> list[str]:
    session = RawSession(port)
    replies = []
    try:
        session.cmd("EHLO camera")
        for _ in range(count):
            try:
                replies.append(session.cmd("MAIL FROM:<cam@cam.lan>"))
                replies.append(session.cmd("RSET"))
            except ConnectionError as exc:
                replies.append(str(exc))
                break
        return replies
    finally:
        session.close()


async def test_a_session_has_a_command_budget(make_config: Callable[..., Config]) -> None:
    config = make_config(smtp={"listen": "127.0.0.1:0", "domain": "monitor.local"})
    async with running(config) as services:
        replies = await asyncio.to_thread(_many_commands, services.smtp.port, MAX_COMMANDS)
        # replies[i] answers command i + 2 (EHLO was the first): the hundredth is served, the next is not
        assert replies[MAX_COMMANDS - 2].startswith("250")
        assert replies[MAX_COMMANDS - 1].startswith("421 4.7.0 Too many commands")
        assert len(replies) == MAX_COMMANDS + 1 and not replies[-1][:1].isdigit()  # then the door closed
        await wait_until(lambda: not services.smtp.sessions, timeout=10, what="no session left")


@pytest.mark.parametrize(("overrides", "problem"), [
    ({"max_connections": 8, "max_connections_per_peer": 9},
     "smtp.max_connections_per_peer: must not exceed smtp.max_connections (8)"),
    ({"max_connections_per_peer": 0}, "smtp.max_connections_per_peer: "),
])
def test_max_connections_per_peer_is_checked(make_config: Callable[..., Config], overrides: dict[str, int],
                                            problem: str) -> None:
    from vmond.config import ConfigError

    with pytest.raises(ConfigError) as error:
        make_config(smtp={"listen": "127.0.0.1:0", "domain": "monitor.local", **overrides})
    assert any(problem in str(p) for p in error.value.problems), error.value.problems


def test_max_connections_per_peer_defaults(make_config: Callable[..., Config]) -> None:
    assert make_config().smtp.max_connections_per_peer == 16
    small = make_config(smtp={"listen": "127.0.0.1:0", "domain": "monitor.local", "max_connections": 4})
    assert small.smtp.max_connections_per_peer == 4  # the default follows a smaller max_connections
