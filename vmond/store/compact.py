"""Giving the database's free pages back to the file system.

SQLite reuses the pages that deletions free, but never shrinks the file on its own. With
``auto_vacuum=INCREMENTAL`` (set before the first table of a new database, see ``PRAGMAS`` in
:mod:`vmond.store.db`) it can: the disk keeper runs ``PRAGMA incremental_vacuum`` after retention removed
rows, in short write transactions.

A database created before that has ``auto_vacuum=NONE``, and switching needs one full ``VACUUM``: it cannot run
inside a transaction and rewrites the whole file (a temporary copy, then every page through the WAL), so it
needs free disk of about twice the database's size. The daemon does it once at start-up, before its database
threads start, when there is room to spare beyond ``storage.min_free_space``; otherwise it says so and tries
again at the next start (until then free pages are still reused, only not returned).
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from vmond.store.models import MODELS

log = logging.getLogger(__name__)

INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL
VACUUM_ROOM = 2.0  # free disk needed by a full VACUUM, in database sizes (temporary copy + WAL)
VACUUM_TIME, VACUUM_RATE = 60.0, 1e6  # seconds, bytes/s: a generous bound on a VACUUM's time on an SD card


def _value(conn: sqlite3.Connection, pragma: str) -> int:
    # PRAGMA takes no parameters; the names are our own constants.
    return int(conn.execute(f"PRAGMA {pragma}").fetchone()[0])


def _size(conn: sqlite3.Connection) -> int:
    return _value(conn, "page_count") * _value(conn, "page_size")


def switch_to_incremental(conn: sqlite3.Connection, path: Path, keep_free: int,
                          extend_start: Callable[[float], None] | None = None) -> bool:
    """Make the database ``auto_vacuum=INCREMENTAL`` if it is not yet, with a one-time ``VACUUM`` when there is
    room for it; True if it is incremental now. Blocking, and only while no other connection of ours is open.
    *extend_start* asks the service manager for more time to start (the VACUUM may take minutes)."""
    if _value(conn, "auto_vacuum") == INCREMENTAL:
        return True
    size = _size(conn)
    free = shutil.disk_usage(path.parent).free
    needed = int(size * VACUUM_ROOM) + keep_free
    if free < needed:
        log.warning("database: not switching to incremental vacuum yet (a one-time VACUUM of %.0f MB needs "
                    "%.0f MB free beyond storage.min_free_space, %.0f MB are free); free pages are reused "
                    "but not given back to the file system until then", size / 1e6,
                    size * VACUUM_ROOM / 1e6, free / 1e6)
        return False
    log.warning("database: switching to incremental vacuum, a one-time VACUUM of %.0f MB (this takes a while "
                "on an SD card)", size / 1e6)
    if extend_start is not None:
        extend_start(VACUUM_TIME + size / VACUUM_RATE)
    started = time.monotonic()
    # The temporary copy goes next to the database (checked for room above), not to /tmp, which may be RAM.
    conn.execute(f"PRAGMA temp_store_directory = '{_quoted(path.parent)}'")
    try:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL held every page once: give that back too
    except sqlite3.Error as exc:  # e.g. the disk filled up after all: VACUUM is one transaction, nothing lost
        log.error("database: the one-time VACUUM failed (%s); trying again at the next start", exc)
        return False
    finally:
        conn.execute("PRAGMA temp_store_directory = ''")
    log.warning("database: incremental vacuum on, %.0f MB -> %.0f MB in %.0f s", size / 1e6, _size(conn) / 1e6,
                time.monotonic() - started)
    return _value(conn, "auto_vacuum") == INCREMENTAL


def _quoted(path: Path) -> str:
    return str(path.resolve()).replace("'", "''")


def page_counts(conn: sqlite3.Connection | None = None) -> dict[str, int]:
    """The database's pages: ``pages`` in all, ``free`` on the free list, ``page_size`` in bytes. Without *conn*,
    on a database thread of ours."""
    return {name: _value(conn if conn is not None else _connection(), pragma)
            for name, pragma in (("pages", "page_count"), ("free", "freelist_count"), ("page_size", "page_size"))}


def return_free_pages(limit: int) -> int:
    """Give up to *limit* free pages back to the file system (with ``auto_vacuum=INCREMENTAL``; else none); returns
    how many went. Runs in a write transaction on the writer thread, like any write."""
    conn = _connection()
    before = left = _value(conn, "freelist_count")
    # The pragma frees one page per step, and Python's sqlite3 (3.11) steps a statement without result columns
    # only once: one page per execute (microseconds each). Loop until done, whichever way this Python steps.
    while before - left < limit:
        conn.execute(f"PRAGMA incremental_vacuum({limit - (before - left)})")
        now = _value(conn, "freelist_count")
        if now >= left:
            break  # nothing more to free (or auto_vacuum is off)
        left = now
    return before - left


def _connection() -> sqlite3.Connection:
    connection: sqlite3.Connection = MODELS[0]._meta.database.connection()
    return connection
