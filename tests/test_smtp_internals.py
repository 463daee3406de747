"""The private names of aiosmtpd and asyncio's StreamReader that vmond relies on, checked against the installed ones.

vmond.ingest.smtpinternals is the only module that touches them. Each test here exercises one name the way the
SMTP session uses it and, when an upgrade of aiosmtpd or Python changed it, fails with the versions and the name,
so that the upgrade is caught in CI instead of as a 451 to every camera. Both CI suites run them: PyPI's aiosmtpd
and Debian's python3-aiosmtpd.
"""

from __future__ import annotations

import ast
import asyncio
import platform
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosmtpd
import pytest
from aiosmtpd.handlers import Sink
from aiosmtpd.smtp import SMTP

import vmond
from vmond.ingest.smtpinternals import command_reader, reading_limit, unread

VERSIONS = f"aiosmtpd {aiosmtpd.__version__}, Python {platform.python_version()}"
INTERNALS = "vmond/ingest/smtpinternals.py"


def changed(name: str, how: str) -> str:
    return f"{VERSIONS}: {name} {how}; vmond's SMTP session relies on it (see {INTERNALS})"


class ReadLineSMTP(SMTP):
    """Stock aiosmtpd with one command that reads the client's next line the way vmond's AUTH challenges do."""

    async def smtp_XREADLINE(self, arg: str | None) -> None:
        try:
            reader = command_reader(self)
        except AttributeError as error:
            await self.push(f"554 {error}")
            return
        if not isinstance(reader, asyncio.StreamReader):
            await self.push(f"554 a {type(reader).__name__}")
            return
        line = await reader.readline()
        await self.push(b"250 " + line.strip())


@asynccontextmanager
async def connected() -> AsyncIterator[tuple[ReadLineSMTP, asyncio.StreamReader, asyncio.StreamWriter]]:
    """A stock aiosmtpd session on loopback: the server's protocol, and the client's streams after the greeting."""
    loop = asyncio.get_running_loop()
    sessions: list[ReadLineSMTP] = []

    def session() -> ReadLineSMTP:
        sessions.append(ReadLineSMTP(Sink(), hostname="test", auth_require_tls=False, loop=loop))
        return sessions[-1]

    server = await loop.create_server(session, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"220 ")
        yield sessions[0], reader, writer
    finally:
        writer.close()
        await writer.wait_closed()
        deadline = loop.time() + 10
        while any(session.transport is not None for session in sessions):  # until the server side has closed too
            assert loop.time() < deadline, "aiosmtpd did not close its side of the connection"
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()


async def test_smtp_keeps_its_command_reader_as_reader() -> None:
    """``SMTP._reader``: the StreamReader aiosmtpd reads command lines from; vmond reads DATA and AUTH's answers
    from it between commands."""
    async with connected() as (_, reader, writer):
        writer.write(b"XREADLINE\r\nthe line after the command\r\nNOOP\r\n")
        replies = [(await asyncio.wait_for(reader.readline(), 10)).strip() for _ in range(2)]
    assert not replies[0].startswith(b"554"), changed("SMTP._reader", f"is gone or changed: {replies[0]!r}")
    assert replies == [b"250 the line after the command", b"250 OK"], changed(
        "SMTP._reader", f"is not the stream the commands come from: {replies}")


class PauseCounter(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.pauses = 0

    def pause_reading(self) -> None:
        self.pauses += 1

    def resume_reading(self) -> None:
        pass


async def test_stream_reader_limit_is_its_limit() -> None:
    """``StreamReader._limit``: what its constructor's *limit* became. It bounds a line and pauses the socket at
    twice its value; vmond widens it while a message streams in, or DATA arrives in command-line-sized reads."""
    reader = asyncio.StreamReader(limit=SMTP.line_length_limit)
    transport = PauseCounter()
    reader.set_transport(transport)
    assert getattr(reader, "_limit", None) == SMTP.line_length_limit, changed(
        "StreamReader._limit", "does not hold the limit given to the constructor")
    with reading_limit(reader, 64 * SMTP.line_length_limit):
        reader.feed_data(b"x" * 8 * SMTP.line_length_limit + b"\n")
        assert transport.pauses == 0, changed("StreamReader._limit", "no longer decides when the socket pauses")
        assert len(await reader.readline()) == 8 * SMTP.line_length_limit + 1, changed(
            "StreamReader._limit", "no longer bounds a line")
    reader.feed_data(b"y" * 3 * SMTP.line_length_limit)
    assert transport.pauses == 1, changed("StreamReader._limit", "was not restored, or does not pause the socket")
    with pytest.raises(ValueError, match="limit"):
        await reader.readline()  # the command line limit is back


async def test_stream_reader_buffer_is_what_it_holds() -> None:
    """``StreamReader._buffer``: a bytearray of what has arrived and not been read; vmond puts back what a client
    pipelined after the final dot, for aiosmtpd to read as the next command."""
    reader = asyncio.StreamReader()
    assert isinstance(getattr(reader, "_buffer", None), bytearray), changed(
        "StreamReader._buffer", "is not a bytearray")
    reader.feed_data(b"NOOP\r\n")
    unread(reader, bytearray(b"RSET\r\n"))
    unread(reader, b"")
    reader.feed_eof()
    assert await reader.read() == b"RSET\r\nNOOP\r\n", changed("StreamReader._buffer", "is not what read() returns")


def _private_names_of_aiosmtpd(session: SMTP, reader: asyncio.StreamReader) -> set[str]:
    names = {*dir(session), *vars(session), *dir(reader), *vars(reader)}
    return {name for name in names if name.startswith("_") and not name.endswith("__")}


async def test_only_the_internals_module_touches_private_names() -> None:
    """No other module that imports aiosmtpd reads or overrides a private name of its SMTP class or of the
    StreamReader under it (an attribute of vmond's own by the same name would shadow aiosmtpd's)."""
    async with connected() as (session, _, _):
        private = _private_names_of_aiosmtpd(session, asyncio.StreamReader())
    root = Path(vmond.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root.parent).as_posix() == INTERNALS:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imports = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                   for alias in node.names}
        imports |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        if "aiosmtpd" not in imports:
            continue
        for node in ast.walk(tree):
            name = (node.attr if isinstance(node, ast.Attribute) else
                    node.name if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else None)
            if name in private:
                found.append(f"{path.relative_to(root.parent)}:{node.lineno} {name}")
    found.sort()
    assert not found, f"private names of aiosmtpd or StreamReader outside {INTERNALS}: {found}"
