"""The durable spool: where an accepted mail waits, safe on disk, until it is an event in the database.

The SMTP server answers 250 only after :meth:`Spool.store_sync` returned: the message was written to
``spool/tmp``, fsynced, renamed into ``spool/new`` and the directory fsynced, so it survives ``kill -9`` and
power loss. The pipeline removes a file only after the database commit that holds its event.

A spool file is one header line (``VMOND1 <json envelope>``) followed by the message exactly as received, so
envelope and content land with a single fsync. Names sort by arrival (nanosecond clock first) so the pipeline
drains them in order.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from vmond.util import fsutil
from vmond.util.crashpoints import crashpoint
from vmond.util.fsutil import fsync_directory, write_all

log = logging.getLogger(__name__)

MAGIC = b"VMOND1 "
SUFFIX = ".msg"
NAME_PATTERN = re.compile(r"\d{20}-[0-9a-f]{32}" + re.escape(SUFFIX))  # what store_sync names a mail


class InsufficientStorage(OSError):
    """Free space is below ``storage.min_free_space``: the camera should retry later (452)."""


@dataclass(frozen=True)
class SpoolEnvelope:
    """What the SMTP dialogue told us about a message."""

    received_at: str  # ISO 8601, UTC
    peer: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    helo: str | None = None
    auth_user: str | None = None
    tls: bool = False

    @property
    def received(self) -> datetime:
        return datetime.fromisoformat(self.received_at)


@dataclass(frozen=True)
class SpoolEntry:
    name: str
    envelope: SpoolEnvelope
    content: bytes


def _split(data: bytes, name: str) -> tuple[bytes, bytes]:
    if not data.startswith(MAGIC):
        raise ValueError(f"spool file {name} has no vmond header")
    header, _, content = data.partition(b"\n")
    return header, content


def read_message(path: str) -> bytes:
    """The message in the spool file at *path*, without vmond's header line."""
    with open(path, "rb") as file:
        return _split(file.read(), os.path.basename(path))[1]


class Spool:
    def __init__(self, root: Path, min_free_space: int = 0) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.new = root / "new"
        self.failed = root / "failed"
        self.min_free_space = min_free_space

    def prepare(self) -> None:
        """Create the directories and clear ``tmp`` (whatever is there was never acknowledged)."""
        for directory in (self.root, self.tmp, self.new, self.failed):
            directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():
            log.info("removing unacknowledged spool leftover %s", leftover.name)
            leftover.unlink()
        fsync_directory(self.root)

    def free_space(self) -> int:
        return shutil.disk_usage(self.root).free

    def store_sync(self, content: bytes, envelope: SpoolEnvelope) -> str:
        """Make *content* durable; returns the spool name. Blocking: call it on a worker thread.

        Raises :class:`InsufficientStorage` below the free-space floor, ``OSError`` on any other failure; in
        both cases nothing is left in ``new``.
        """
        header = MAGIC + json.dumps(asdict(envelope), separators=(",", ":")).encode() + b"\n"
        if self.min_free_space and self.free_space() - len(header) - len(content) < self.min_free_space:
            raise InsufficientStorage(errno.ENOSPC, "free space below storage.min_free_space")
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex}{SUFFIX}"
        tmp_path = self.tmp / name
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            try:
                write_all(fd, header)
                write_all(fd, content)
                crashpoint("after_spool_write")
                # After a failed fsync the page cache may hold data that never reaches the disk: give up on this
                # descriptor and file entirely; the camera retries the whole message.
                fsutil.fsync_file(fd)
                crashpoint("after_spool_fsync")
            finally:
                os.close(fd)
            os.rename(tmp_path, self.new / name)
            fsync_directory(self.new)
            crashpoint("after_spool_rename")
        except BaseException:
            for path in (tmp_path, self.new / name):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
            raise
        return name

    def pending(self) -> list[str]:
        """Names waiting in ``new``, oldest first."""
        return sorted(p.name for p in self.new.iterdir() if p.name.endswith(SUFFIX))

    def path(self, name: str) -> Path:
        """Where the waiting mail *name* is (for a worker that reads it itself)."""
        return self.new / name

    def load(self, name: str) -> SpoolEntry:
        header, content = _split((self.new / name).read_bytes(), name)
        fields = json.loads(header[len(MAGIC):])
        fields["rcpt_tos"] = tuple(fields["rcpt_tos"])
        return SpoolEntry(name, SpoolEnvelope(**fields), content)

    def remove(self, name: str) -> None:
        # No directory fsync: if the unlink is lost to a power cut, the replay finds the mail already
        # committed (by its ingest key) and only removes the file again.
        (self.new / name).unlink(missing_ok=True)

    def set_aside(self, name: str) -> Path:
        """Move a file the pipeline cannot process into ``failed`` (kept for a human, never deleted)."""
        target = self.failed / name
        os.replace(self.new / name, target)
        fsync_directory(self.failed)
        return target

    def count_pending(self) -> int:
        return sum(1 for p in self.new.iterdir() if p.name.endswith(SUFFIX))

    def oldest_pending_age(self) -> float | None:
        """Seconds the oldest mail in ``new`` has waited (its name starts with the time it was spooled), None
        when none waits. Blocking: for supervision's ``spool_stuck``."""
        oldest = min((p.name for p in self.new.iterdir() if p.name.endswith(SUFFIX)), default=None)
        if oldest is None:
            return None
        try:
            return max(0.0, time.time() - int(oldest[:20]) / 1e9)
        except ValueError:  # not a name vmond gave
            return None
