"""vmond's chunked DATA reader against stock aiosmtpd: the same bytes on the wire give byte-identical content.

Both servers run in the test's loop on loopback ports: a stock ``aiosmtpd.smtp.SMTP`` whose handler records
``envelope.original_content``, and the whole daemon, whose content is captured where the SMTP handler hands it to
the spool (``Spool.store_sync``). A raw-socket client sends the same DATA bytes to both. Where they must differ
(lines longer than 1,000 octets and bare-LF mails: stock aiosmtpd answers 500, vmond accepts, see the README's
SMTP section) the test says so.
"""

from __future__ import annotations

import asyncio
import base64
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP
from conftest import MAIL_DIR, Daemon, write_config
from rawsmtp import RawSession

from vmond.config import load_config
from vmond.daemon import running
from vmond.ingest.smtpsession import DOT_PROBES, END_OF_DATA, find_end_of_data, has_dot_line
from vmond.ingest.spool import Spool

RECIPIENT = "camera-front@monitor.local"
STOCK_LIMIT = 1 << 30  # "large": stock aiosmtpd must not refuse what the comparison sends


def stuffed(raw: bytes) -> bytes:
    """What a client sends after DATA for the message *raw*: dot-stuffing after CRLF only (RFC 5321 4.5.2), a final
    CRLF added when the message lacks one, and the terminating dot."""
    wire = (b"\r\n" + raw).replace(b"\r\n.", b"\r\n..")[2:]
    if not wire.endswith(b"\r\n"):
        wire += b"\r\n"
    return wire + b".\r\n"


def crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def random_binary(seed: int, lines: int) -> bytes:
    """8-bit garbage in CRLF lines of up to 900 octets, some starting with dots (and CR, LF and NUL inside)."""
    rnd = random.Random(seed)
    out = [b"Subject: binary\r\nContent-Transfer-Encoding: 8bit\r\n"]
    for _ in range(lines):
        line = rnd.randbytes(rnd.randrange(0, 900))
        out.append(b"." * rnd.choice((0, 0, 0, 1, 2)) + line + b"\r\n")
    return b"".join(out)


def base64_mail(size: int) -> bytes:
    payload = base64.encodebytes(random.Random(size).randbytes(size)).replace(b"\n", b"\r\n")
    return (b"Subject: big snapshot\r\nMIME-Version: 1.0\r\nContent-Type: image/jpeg\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + payload)


# Messages as the camera means them; the client stuffs them as RFC 5321 has it.
MESSAGES: dict[str, bytes] = {
    "plain": b"Subject: plain\r\nFrom: cam@cam.lan\r\n\r\nhello\r\n",
    "leading-dots": b"Subject: dots\r\n\r\n.one\r\n..two\r\n...three\r\n. space\r\n",
    "first-line-dot": b".Subject: the first line starts with a dot\r\n\r\nbody\r\n",
    "lone-dot-lines": b"Subject: lone dots\r\n\r\n.\r\ntext\r\n.\r\n.\r\n..\r\nend\r\n",
    "lone-dot-last": b"Subject: x\r\n\r\nlast line is a dot\r\n.\r\n",
    "crlf-only": b"\r\n\r\n\r\n",
    "one-crlf": b"\r\n",
    "no-final-crlf": b"Subject: x\r\n\r\nno line end at the end",
    "no-final-crlf-dot": b"Subject: x\r\n\r\nends in a dot without CRLF\r\n.",
    "bare-lf-dot-inside": b"Subject: smuggled?\r\n\r\nabc\n.\nMAIL FROM:<evil@evil>\nRCPT TO:<x@y>\r\nafter\r\n",
    "lf-dot-crlf": b"Subject: y\r\n\r\nx\n.\r\ny\r\n",
    "crlf-dot-lf": b"Subject: y\r\n\r\nx\r\n.\ny\r\n",
    "cr-dot-crlf": b"Subject: y\r\n\r\nx\r.\r\ny\r\n",
    "crlf-dot-cr": b"Subject: y\r\n\r\nx\r\n.\ry\r\n",
    "binary-all-bytes": b"Subject: bytes\r\n\r\n" + bytes(range(256)) * 3 + b"\r\n",
    "binary-random": random_binary(1, 400),
    "utf8-and-latin1": "Subject: Kamera Büro\r\n\r\nBewegung erkannt – Eingang\r\n".encode()
                       + "\xe9t\xe9\r\n".encode("latin-1"),
    "base64-2MB": base64_mail(1_500_000),
} | {f"sample-{path.stem}": crlf(path.read_bytes()) for path in sorted(MAIL_DIR.glob("*.eml"))}

# Bytes sent as they are after DATA (not stuffed by us): what a careless client puts on the wire.
WIRE: dict[str, bytes] = {
    "empty": b".\r\n",
    "unstuffed-leading-dots": b"a\r\n.b\r\n..c\r\n...\r\n.\r\n",
    "unstuffed-first-line": b".x\r\ny\r\n.\r\n",
    "unstuffed-dot-lf": b"a\r\n.\nb\r\n.\r\n",
    "unstuffed-dot-cr": b"a\r\n.\rb\r\n.\r\n",
}


def transaction(port: int, wire: bytes, pieces: int = 1, pipelined: bool = False) -> tuple[str, str]:
    """EHLO, MAIL, RCPT, DATA, then *wire* (in *pieces* writes), NOOP and QUIT; returns the DATA and NOOP replies."""
    client = RawSession(port)
    try:
        assert client.cmd("EHLO camera").startswith("250")
        assert client.cmd("MAIL FROM:<cam@cam.lan>").startswith("250")
        assert client.cmd(f"RCPT TO:<{RECIPIENT}>").startswith("250")
        if pipelined:  # DATA and the message in one write, before the 354 (no PIPELINING, but firmware does it)
            client.sock.sendall(b"DATA\r\n" + wire)
            assert client.reply().startswith("354")
        else:
            assert client.cmd("DATA").startswith("354")
            size = -(-len(wire) // pieces)
            for start in range(0, len(wire), size):
                client.sock.sendall(wire[start:start + size])
                if pieces > 1:
                    time.sleep(0.005)  # let each piece arrive on its own
        done = client.reply()
        noop = client.cmd("NOOP")
        client.cmd("QUIT")
        return done, noop
    finally:
        client.close()


class StockHandler:
    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        self.contents.append(envelope.original_content)
        return "250 OK"


class Stock:
    def __init__(self, port: int, handler: StockHandler) -> None:
        self.port = port
        self.handler = handler


@pytest.fixture
async def start_stock() -> AsyncIterator[Callable[[int], Awaitable[Stock]]]:
    loop = asyncio.get_running_loop()
    servers: list[asyncio.AbstractServer] = []

    async def start(data_size_limit: int = STOCK_LIMIT) -> Stock:
        handler = StockHandler()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="test", auth_require_tls=False, data_size_limit=data_size_limit,
                         loop=loop),
            "127.0.0.1", 0)
        servers.append(server)
        return Stock(server.sockets[0].getsockname()[1], handler)

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def stock(start_stock: Callable[[int], Awaitable[Stock]]) -> Stock:
    return await start_stock(STOCK_LIMIT)


@pytest.fixture
def spooled(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The content of every mail the SMTP handler hands to the spool."""
    seen: list[bytes] = []
    store_sync = Spool.store_sync

    def recording(self: Spool, content: bytes, envelope: Any) -> str:
        seen.append(bytes(content))
        return store_sync(self, content, envelope)

    monkeypatch.setattr(Spool, "store_sync", recording)
    return seen


async def both(stock: Stock, daemon: Daemon, wire: bytes, **kwargs: Any) -> tuple[tuple[str, str], tuple[str, str]]:
    return (await asyncio.to_thread(transaction, stock.port, wire, **kwargs),
            await asyncio.to_thread(transaction, daemon.smtp_port, wire, **kwargs))


def expected(raw: bytes) -> bytes:
    return raw if raw.endswith(b"\r\n") or not raw else raw + b"\r\n"


@pytest.mark.parametrize("name", sorted(MESSAGES))
async def test_same_content_as_stock_aiosmtpd(name: str, stock: Stock, daemon: Daemon, spooled: list[bytes]) -> None:
    raw = MESSAGES[name]
    (stock_done, _), (vmond_done, vmond_noop) = await both(stock, daemon, stuffed(raw))
    assert stock_done.startswith("250 "), stock_done
    assert vmond_done.startswith("250 2.0.0"), vmond_done
    assert vmond_noop.startswith("250")
    assert len(stock.handler.contents) == 1 and len(spooled) == 1  # nothing inside ended the message early
    assert stock.handler.contents[0] == expected(raw)  # the test's own stuffing is right
    assert spooled[0] == stock.handler.contents[0]


@pytest.mark.parametrize("name", sorted(WIRE))
async def test_same_content_for_raw_wire_bytes(name: str, stock: Stock, daemon: Daemon, spooled: list[bytes]
                                               ) -> None:
    (stock_done, _), (vmond_done, _) = await both(stock, daemon, WIRE[name])
    assert stock_done.startswith("250 ") and vmond_done.startswith("250 "), (stock_done, vmond_done)
    assert len(stock.handler.contents) == 1 and len(spooled) == 1
    assert spooled[0] == stock.handler.contents[0]


@pytest.mark.parametrize("how", ["pipelined", "pieces-7", "pieces-64"])
async def test_same_content_however_the_bytes_arrive(how: str, stock: Stock, daemon: Daemon, spooled: list[bytes]
                                                     ) -> None:
    """The terminator and the stuffed dots split across reads (or DATA and message in one write)."""
    raw = b"Subject: split\r\n\r\n" + b"".join(b"." * (i % 3) + b"line %d\r\n" % i for i in range(40)) + b".\r\n"
    kwargs: dict[str, Any] = {"pipelined": True} if how == "pipelined" else {"pieces": int(how.split("-")[1])}
    (stock_done, _), (vmond_done, _) = await both(stock, daemon, stuffed(raw), **kwargs)
    assert stock_done.startswith("250 ") and vmond_done.startswith("250 "), (stock_done, vmond_done)
    assert stock.handler.contents == [raw]
    assert spooled == [raw]


async def test_bare_lf_dot_lf_ends_nothing(stock: Stock, daemon: Daemon, spooled: list[bytes]) -> None:
    raw = b"Subject: one\r\n\r\nx\n.\nQUIT\nMAIL FROM:<evil@evil>\n.\n\r\nstill one\r\n"
    (stock_done, stock_noop), (vmond_done, vmond_noop) = await both(stock, daemon, stuffed(raw))
    assert stock_done.startswith("250 ") and vmond_done.startswith("250 ")
    assert stock_noop.startswith("250") and vmond_noop.startswith("250")  # no smuggled commands answered between
    assert stock.handler.contents == [raw] and spooled == [raw]


LONG_AND_BARE_LF = {
    "line-1000-octets": b"Subject: long\r\n\r\n" + b"x" * 1000 + b"\r\n",
    "line-100000-octets": b"Subject: longer\r\n\r\n" + b"y" * 100_000 + b"\r\nend\r\n",  # past the reader's limit
    "bare-lf-sample-dafang": (MAIL_DIR / "dafang-uuencode.eml").read_bytes(),  # as the firmware sends it
    "bare-lf-sample-hikvision": (MAIL_DIR / "hikvision-ipc-intrusion.eml").read_bytes().replace(b"\r\n", b"\n"),
}


@pytest.mark.parametrize("name", sorted(LONG_AND_BARE_LF))
async def test_long_lines_and_bare_lf_refused_by_stock_accepted_by_vmond(name: str, stock: Stock, daemon: Daemon,
                                                                         spooled: list[bytes]) -> None:
    """The documented decision: vmond accepts any line length up to smtp.max_message_size (cameras send such
    mail), where stock aiosmtpd answers 500 and the alarm would be lost."""
    raw = LONG_AND_BARE_LF[name]
    (stock_done, stock_noop), (vmond_done, vmond_noop) = await both(stock, daemon, stuffed(raw))
    assert stock_done.startswith("500 "), stock_done
    assert stock.handler.contents == []
    assert vmond_done.startswith("250 2.0.0"), vmond_done
    assert spooled == [expected(raw)]  # the bare-LF mail with the CRLF its client added
    assert stock_noop.startswith("250") and vmond_noop.startswith("250")


LIMIT = 20_000


# 5: once accepted by vmond (its reader's limit was widened by the terminator's length).
@pytest.mark.parametrize("extra", [0, 1, 5, 300_000])
async def test_size_limit_like_stock(extra: int, tmp_path: Path, start_stock: Callable[[int], Awaitable[Stock]],
                                     spooled: list[bytes]) -> None:
    """A message of exactly smtp.max_message_size octets (as sent, stuffing included) is taken; one octet more gets
    552, nothing is spooled, and the session goes on. Stock aiosmtpd with the same limit agrees."""
    config = load_config(write_config(tmp_path, smtp={"max_message_size": LIMIT}))
    stock = await start_stock(LIMIT)
    header = b"Subject: size\r\n\r\n"
    size = LIMIT + extra
    body = b"".join(b"z" * 98 + b"\r\n" for _ in range((size - len(header)) // 100))
    raw = header + body + b"q" * (size - len(header) - len(body) - 2) + b"\r\n"
    assert len(raw) == size
    async with running(config) as services:
        daemon = Daemon(services)
        (stock_done, stock_noop), (vmond_done, vmond_noop) = await both(stock, daemon, stuffed(raw))
        if extra:
            assert stock_done.startswith("552 ") and stock.handler.contents == []
            assert vmond_done.startswith("552 5.3.4"), vmond_done
            assert spooled == [] and services.spool.count_pending() == 0 and not list(services.spool.tmp.iterdir())
        else:
            assert stock_done.startswith("250 ") and vmond_done.startswith("250 2.0.0"), (stock_done, vmond_done)
            assert stock.handler.contents == [raw] and spooled == [raw]
        assert stock_noop.startswith("250") and vmond_noop.startswith("250")  # the session goes on


def test_dot_searches_agree_with_the_plain_ones() -> None:
    """The memchr-speed searches for a dot line and for CRLF.CRLF give what the plain searches give, also past the
    dots they look at one by one."""
    rnd = random.Random(7)
    pieces = [b"a", b".", b"..", b"\r\n", b"\r", b"\n", b"\r\n.", b"\r\n.\r\n", b"QUJD" * 20]
    for _ in range(3000):
        raw = b"".join(rnd.choice(pieces) for _ in range(rnd.randrange(0, 400))) + b".\r\n"
        end = len(raw) - 3
        assert has_dot_line(raw, end) == (raw.startswith(b".") or raw.find(b"\r\n.", 0, end) != -1), raw
        data = bytearray(raw)
        start = rnd.randrange(0, len(data))
        assert find_end_of_data(data, start) == data.find(END_OF_DATA, start), (raw, start)
    dotted = b"x." * (DOT_PROBES * 2)
    assert has_dot_line(dotted + b"\r\n.x.\r\n", len(dotted) + 4)
    assert not has_dot_line(dotted + b"\r\nx.\r\n", len(dotted) + 4)
    assert find_end_of_data(bytearray(dotted + b"\r\n.\r\n"), 0) == len(dotted)
