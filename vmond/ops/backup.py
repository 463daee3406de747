"""``vmond backup DEST`` and ``vmond restore SRC``: the database, the media and the spool, consistent, online.

Every mail waiting in the spool (acknowledged to a camera but not yet an event: it must not be left behind) is
copied first; then the database, with SQLite's online backup API (a consistent snapshot while the daemon keeps
writing); then the media files that snapshot refers to. A restore puts it all into a data directory while no
daemon runs there; on its next start the daemon turns the spooled mails into events as usual.

Paths are confined both ways. A backup reads a media file only if the database's path for it is relative, stays
inside the media directory, and still lands there once symbolic links are resolved (``media`` itself may be a
link to another disk: that is the installer's layout); it writes only under DEST, which it creates or finds
empty, and never through an existing name. A path refused is skipped, counted in the manifest and listed.
A restore accepts a backup only as a whole, after :func:`vmond.ops.backupcheck.check_backup` read all of it.

A restore never leaves half a state behind. It copies the backup into staging directories (``.vmond-restore``
in the data directory and in its ``media`` and ``spool`` directories, so that each later rename stays on one
file system) and fsyncs them; any failure until then (a refused backup, a full disk, an I/O error) removes
them and leaves the data directory as it was, even with ``--force``. Then only renames follow: media and
spooled mails into place, and the database last, which is the commit (a replaced database is checkpointed
first, so it is whole up to that moment). Only a crash between those renames leaves some of the backup's
files beside the previous state; running the same restore again completes it (with ``--force`` if a database
was there), and removes any staging left over.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import sqlite3
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vmond.media.store import media_relpath
from vmond.ops.backupcheck import (
    DB_NAME,
    MANIFEST,
    MEDIA_PATHS,
    BackupError,
    Refused,
    check_backup,
    check_database,
    copy_file,
    shown,
    tree_files,
)
from vmond.store import migrations
from vmond.util.fsutil import fsync_directory, fsync_path
from vmond.util.version import VERSION

__all__ = ["BackupError", "backup", "data_dir_lock", "restore"]

log = logging.getLogger(__name__)

LOCK_NAME = "vmond.lock"
STAGING = ".vmond-restore"
STAGING_BACKUP = ".vmond-backup-"
TREES = ("media", "spool")
REFUSALS_LISTED = 100  # in the manifest; the count is always whole


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


class _Refusals:
    def __init__(self) -> None:
        self.counts = {"media": 0, "spool": 0}
        self.listed: list[str] = []

    def add(self, tree: str, name: object, why: object) -> None:
        self.counts[tree] += 1
        if len(self.listed) < REFUSALS_LISTED:
            self.listed.append(f"{tree} {shown(name)}: {why}")


def backup(data_dir: Path, dest: Path) -> dict[str, Any]:
    """Write a backup into *dest* (a new or empty directory); returns what the manifest records, including the
    media and spool files refused (``media_refused``, ``spool_refused``, the first ones listed in ``refused``).

    *dest* must be writable by its owner alone, the user running the backup: nobody else can then slip a
    symbolic link under a name the backup is about to write. The directory is held open and used through
    ``/proc/self/fd``, so a rename of it (or of a directory above it) meanwhile changes nothing. Everything is
    written into a private directory inside it first, then renamed into place, the manifest last; a private
    directory left by an interrupted backup is removed."""
    source_db = data_dir / DB_NAME
    if not source_db.is_file():
        raise BackupError(f"no database at {source_db}")
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise BackupError(f"{dest}: {exc.strerror}") from None
    try:
        status = os.fstat(fd)
        if status.st_uid != os.geteuid() or status.st_mode & 0o022:
            raise BackupError(f"{dest} may be written by other users (mode {stat.filemode(status.st_mode)}, "
                              f"owner uid {status.st_uid}); back up into a directory only you can write to")
        pinned = Path(f"/proc/self/fd/{fd}")
        root = pinned if pinned.is_dir() else dest  # no /proc: the path, checked above
        entries = os.listdir(root)
        for name in entries:
            if name.startswith(STAGING_BACKUP):
                shutil.rmtree(root / name, ignore_errors=True)  # left by an interrupted backup of ours
        if any(not name.startswith(STAGING_BACKUP) for name in entries):
            raise BackupError(f"{dest} is not empty")
        return _stage_and_rename(data_dir, root, dest)
    finally:
        os.close(fd)


def _stage_and_rename(data_dir: Path, root: Path, dest: Path) -> dict[str, Any]:
    staging = Path(tempfile.mkdtemp(prefix=STAGING_BACKUP, dir=root))
    try:
        manifest = _write_backup(data_dir, staging)
        _sync_tree(staging)
        try:
            for name in (*TREES, DB_NAME, MANIFEST):  # the manifest last: it says the backup is whole
                if (staging / name).exists():
                    os.rename(staging / name, root / name)
        except OSError as exc:
            raise BackupError(f"could not put the backup into {dest}: {exc.strerror} ({name})") from None
        fsync_directory(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _write_backup(data_dir: Path, dest: Path) -> dict[str, Any]:
    started = time.monotonic()
    refusals = _Refusals()
    # The spool first, the database after: a mail that leaves the spool in between was committed before it left,
    # so the snapshot has it. (The other order would lose one committed and removed between the two.) A mail in
    # both is recognised by its ingest key when the restored daemon replays the spool.
    spooled = 0
    spool = data_dir / "spool" / "new"
    for entry in sorted(spool.iterdir()) if spool.is_dir() else ():
        try:
            spooled += copy_file(entry, dest / "spool" / "new" / entry.name)
        except Refused as exc:
            refusals.add("spool", entry.name, exc)
    with closing(sqlite3.connect(data_dir / DB_NAME, timeout=30)) as live, \
            closing(sqlite3.connect(dest / DB_NAME)) as copy:
        live.backup(copy, pages=4096)  # in steps, so the daemon's writer is never held up for long
        media = [row[0] for row in copy.execute(MEDIA_PATHS)]
        events = copy.execute("SELECT count(*) FROM alarm_event").fetchone()[0]
        schema = migrations.schema_version(copy)
    copied = _copy_media(data_dir / "media", dest / "media", media, refusals)
    manifest: dict[str, Any] = {
        "vmond": VERSION, "schema": schema, "taken_at": datetime.now(UTC).isoformat(), "events": events,
        "media_files": copied, "media_missing": len(media) - copied - refusals.counts["media"],
        "media_refused": refusals.counts["media"], "spooled_mails": spooled, "spool_refused": refusals.counts["spool"],
        "seconds": round(time.monotonic() - started, 2)}
    if refusals.listed:
        manifest["refused"] = refusals.listed
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _copy_media(media_dir: Path, dest_media: Path, paths: list[object], refusals: _Refusals) -> int:
    """Copy the files the database names; returns how many were there to copy."""
    root = media_dir.resolve()
    copied = 0
    for value in paths:
        try:
            relpath = media_relpath(value)
            source = root.joinpath(*relpath.parts).resolve()
            if not source.is_relative_to(root):
                raise Refused("a symbolic link out of the media directory")
            copied += copy_file(source, dest_media.joinpath(*relpath.parts))
        except (Refused, ValueError) as exc:  # Refused is a ValueError; so is media_relpath's answer
            refusals.add("media", value, exc)
        except RuntimeError:  # a loop of symbolic links, before Python 3.13
            refusals.add("media", value, "a loop of symbolic links")
        except OSError as exc:  # a directory, a name too long, a loop of links (3.13), an unreadable file
            refusals.add("media", value, "a loop of symbolic links" if exc.errno == errno.ELOOP
                         else exc.strerror or type(exc).__name__)
    return copied


def _sync_tree(root: Path) -> None:
    """fsync every file and directory: a backup that a power cut can half-erase is no backup."""
    for directory, _, files in os.walk(root):
        for name in files:
            fsync_path(Path(directory) / name)
        fsync_directory(Path(directory))


def restore(source: Path, data_dir: Path, force: bool = False) -> dict[str, Any]:
    """Put a backup into *data_dir*; refuses a data directory that has a database unless *force*, and a backup
    that does not pass :func:`check_backup` before writing anything."""
    manifest = check_backup(source)
    with data_dir_lock(data_dir):
        if (data_dir / DB_NAME).exists() and not force:
            raise BackupError(f"{data_dir} already has a database (use --force to replace it)")
        _remove_staging(data_dir)  # a crashed restore's
        new_trees = [tree for tree in TREES if not os.path.lexists(data_dir / tree)]
        try:
            _stage(source, data_dir)
            check_database(_staging(data_dir) / DB_NAME, manifest["schema"])  # what was copied is what counts
            moves = _planned_moves(data_dir)
        except BaseException as exc:
            _remove_staging(data_dir)
            for tree in new_trees:
                shutil.rmtree(data_dir / tree, ignore_errors=True)  # made for the staging, empty now
            if isinstance(exc, Refused):
                raise BackupError(f"refused the backup: {exc}") from None
            if isinstance(exc, OSError):
                raise BackupError(f"the restore failed; the data directory is as it was: {exc}") from None
            raise
        try:
            _install(data_dir, moves)
        except OSError as exc:
            raise BackupError(f"the restore stopped while moving files into place ({exc}); the previous "
                              "database is still in place, the backup's files are in .vmond-restore") from None
        _remove_staging(data_dir)
    return manifest


def _staging(data_dir: Path, tree: str | None = None) -> Path:
    return (data_dir / tree if tree else data_dir) / STAGING


def _remove_staging(data_dir: Path) -> None:
    for tree in (None, *TREES):
        staging = _staging(data_dir, tree)
        if staging.is_symlink():
            staging.unlink()
        elif staging.exists():
            shutil.rmtree(staging)


def _stage(source: Path, data_dir: Path) -> None:
    """Copy the backup next to where it goes, without following a link; fsynced."""
    copy_file(source / DB_NAME, _staging(data_dir) / DB_NAME)
    for tree in TREES:
        staging = _staging(data_dir, tree)
        staging.mkdir(parents=True)
        if (source / tree).is_dir():
            for name in tree_files(source / tree):
                copy_file(source.joinpath(tree, *name.parts), staging.joinpath(*name.parts))
        _sync_tree(staging)
    _sync_tree(_staging(data_dir))


def _planned_moves(data_dir: Path) -> list[tuple[Path, Path]]:
    """Every staged file and its place, each checked before the first is moved: inside its tree once links are
    resolved (a link left in the data directory does not lead a file out), and not onto a directory."""
    moves = []
    for tree in TREES:
        root = (data_dir / tree).resolve()
        staging = _staging(data_dir, tree)
        for name in tree_files(staging):
            target = data_dir.joinpath(tree, *name.parts)
            if not target.parent.resolve().is_relative_to(root) or target.is_dir():
                raise BackupError(f"nothing was restored: a symbolic link or a directory in {data_dir / tree} "
                                  f"stands where {shown(name.as_posix())} goes")
            moves.append((staging.joinpath(*name.parts), target))
    return moves


def _install(data_dir: Path, moves: list[tuple[Path, Path]]) -> None:
    """Renames only, the database last: until it is in place, the data directory holds its previous database."""
    changed: set[Path] = set()
    for staged, target in moves:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
        changed.update(parent for parent in target.parents if parent.is_relative_to(data_dir))
    for directory in sorted(changed, key=lambda path: len(path.parts), reverse=True):
        fsync_directory(directory)  # the deepest first: each new name, then the new directory's own entry
    _retire_database(data_dir / DB_NAME)
    os.replace(_staging(data_dir) / DB_NAME, data_dir / DB_NAME)
    fsync_directory(data_dir)
    log.info("restored a backup into %s", data_dir)


def _retire_database(path: Path) -> None:
    """Before a database is replaced: its write-ahead log folded in (so the file is whole on its own until the
    replacement lands), then the log and its index removed (SQLite would apply them to the new file)."""
    if path.exists():
        try:
            with closing(sqlite3.connect(path)) as old:
                old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.DatabaseError as exc:
            log.warning("restore: the database being replaced could not be checkpointed: %s", exc)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
