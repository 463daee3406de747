"""The private names of aiosmtpd and of asyncio's StreamReader that the SMTP door relies on, and nowhere else.

Everything else the door does with aiosmtpd goes through what its documentation offers: the handler hooks, the
``smtp_<COMMAND>`` methods, ``push``, ``session``, ``envelope``, ``transport``, ``event_handler`` and the
constructor's arguments. What is left here has no public equivalent and is kept for speed (DATA read in large
chunks, see :mod:`vmond.ingest.smtpsession`) or for the transcript (AUTH's answers recorded before the reply).

Each name has a test in ``tests/test_smtp_internals.py`` that fails with the aiosmtpd or Python version and the
name when an upgrade changed it; ``setup.cfg`` bounds aiosmtpd to the versions those tests have run on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from aiosmtpd.smtp import SMTP


def command_reader(session: SMTP) -> asyncio.StreamReader:
    """The stream a session reads its command lines from (aiosmtpd's ``SMTP._reader``).

    aiosmtpd sets it when the connection is made and keeps it across STARTTLS. The DATA reader and the AUTH
    challenges read from it as aiosmtpd's own loop does between commands; aiosmtpd has no public accessor.
    """
    return session._reader


@contextlib.contextmanager
def reading_limit(reader: asyncio.StreamReader, limit: int) -> Iterator[None]:
    """Let *reader* buffer up to about twice *limit* before it pauses the socket, for the block (StreamReader's
    ``_limit``, which only its constructor takes).

    aiosmtpd creates its reader with the command line length as the limit, so without this a megabyte of DATA
    would arrive in kilobyte reads. aiosmtpd itself reaches into the reader the same way (``_buffer`` at
    STARTTLS). The limit in force before is restored on the way out, so command lines keep theirs.
    """
    saved = reader._limit  # type: ignore[attr-defined]
    reader._limit = limit  # type: ignore[attr-defined]
    try:
        yield
    finally:
        reader._limit = saved  # type: ignore[attr-defined]


def unread(reader: asyncio.StreamReader, data: bytes | bytearray) -> None:
    """Put *data* back in front of what *reader* holds (StreamReader's ``_buffer``, a bytearray).

    The DATA reader reads in chunks past the final dot; a client that pipelines may have sent its next command in
    the same chunk, and aiosmtpd must find it there. Searching the chunks ourselves is what makes DATA fast, and
    ``readuntil`` could not search for the terminator as quickly (see :func:`smtpsession.find_end_of_data`).
    """
    if data:
        reader._buffer[0:0] = data  # type: ignore[attr-defined]
