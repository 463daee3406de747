"""``vmond backup DEST`` and ``vmond restore SRC``: the database, the media and the spool, consistent, online.

Every mail waiting in the spool (acknowledged to a camera but not yet an event: it must not be left behind) is
copied first; then the database, with SQLite's online backup API (a consistent snapshot while the daemon keeps
writing); then the media files that snapshot refers to. A restore puts it all into an empty data directory while no
daemon runs there; on its next start the daemon turns the spooled mails into events as usual.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import vmond
from vmond.store import migrations

log = logging.getLogger(__name__)

DB_NAME = "vmond.db"
LOCK_NAME = "vmond.lock"
MANIFEST = "vmond-backup.json"


class BackupError(RuntimeError):
    pass


@contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Held by a running daemon (and by a restore): two of them on one data directory would corrupt it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / LOCK_NAME, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(f"{data_dir} is in use by a running vmond") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _copy(source: Path, target: Path) -> bool:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        return True
    except FileNotFoundError:
        return False  # removed by retention between the snapshot and the copy


def backup(data_dir: Path, dest: Path) -> dict[str, int | str]:
    """Write a backup into *dest* (a new or empty directory); returns what the manifest records."""
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty")
    source_db = data_dir / DB_NAME
    if not source_db.is_file():
        raise BackupError(f"no database at {source_db}")
    dest.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # The spool first, the database after: a mail that leaves the spool in between was committed before it left,
    # so the snapshot has it. (The other order would lose one committed and removed between the two.) A mail in
    # both is recognised by its ingest key when the restored daemon replays the spool.
    spooled = 0
    spool = data_dir / "spool" / "new"
    for entry in sorted(spool.iterdir()) if spool.is_dir() else ():
        spooled += _copy(entry, dest / "spool" / "new" / entry.name)
    with sqlite3.connect(source_db, timeout=30) as live, sqlite3.connect(dest / DB_NAME) as copy:
        live.backup(copy, pages=4096)  # in steps, so the daemon's writer is never held up for long
        media = [row[0] for row in copy.execute("SELECT path FROM media UNION SELECT thumb_path FROM media "
                                                "WHERE thumb_path IS NOT NULL")]
        events = copy.execute("SELECT count(*) FROM alarm_event").fetchone()[0]
        schema = migrations.schema_version(copy)
    live.close()
    copy.close()
    copied_media = sum(_copy(data_dir / "media" / path, dest / "media" / path) for path in media)
    manifest = {"vmond": vmond.__version__, "schema": schema, "taken_at": datetime.now(UTC).isoformat(),
                "events": events, "media_files": copied_media, "media_missing": len(media) - copied_media,
                "spooled_mails": spooled, "seconds": round(time.monotonic() - started, 2)}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    _sync_tree(dest)
    return manifest


def _sync_tree(root: Path) -> None:
    """fsync every file and directory: a backup that a power cut can half-erase is no backup."""
    for directory, _, files in os.walk(root):
        for name in files:
            fd = os.open(Path(directory) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def restore(source: Path, data_dir: Path, force: bool = False) -> dict[str, int | str]:
    """Put a backup into *data_dir*; refuses a data directory that has a database unless *force*."""
    manifest_path = source / MANIFEST
    if not manifest_path.is_file() or not (source / DB_NAME).is_file():
        raise BackupError(f"{source} is not a vmond backup (no {MANIFEST} or {DB_NAME})")
    manifest = json.loads(manifest_path.read_text())
    if int(manifest["schema"]) > migrations.LATEST:
        raise BackupError(f"the backup's schema {manifest['schema']} is newer than this vmond understands")
    with data_dir_lock(data_dir):
        if (data_dir / DB_NAME).exists() and not force:
            raise BackupError(f"{data_dir} already has a database (use --force to replace it)")
        for stale in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"):
            (data_dir / stale).unlink(missing_ok=True)
        shutil.copy2(source / DB_NAME, data_dir / DB_NAME)
        for tree in ("media", "spool"):
            if (source / tree).is_dir():
                shutil.copytree(source / tree, data_dir / tree, dirs_exist_ok=True)
        _sync_tree(data_dir)
    return manifest
