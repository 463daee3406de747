"""What ``vmond restore`` accepts as a backup, and file copies that never follow a symbolic link.

A backup is input from outside: a copy kept on a USB stick or a share, possibly tampered with. Before anything
is written into the data directory, :func:`check_backup` reads all of it and refuses the whole backup with one
line saying why, if any of this holds: the manifest is not the JSON that ``vmond backup`` writes (every field is
checked for its type); the manifest, the database or anything in the ``media`` and ``spool`` trees is a symbolic
link or not a regular file or directory; the spool holds anything but mails in ``spool/new`` named as the spool
names them; the database is damaged, newer than this vmond, or names a media file by an absolute path or one
that leaves the media directory. Read-only, on the caller's thread.
"""

from __future__ import annotations

import errno
import json
import math
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from vmond.ingest.spool import NAME_PATTERN
from vmond.media.store import media_relpath
from vmond.store import migrations

DB_NAME = "vmond.db"
MANIFEST = "vmond-backup.json"
MANIFEST_MAX_BYTES = 1024 * 1024
MEDIA_PATHS = "SELECT path FROM media UNION SELECT thumb_path FROM media WHERE thumb_path IS NOT NULL"
COUNTS = ("events", "media_files", "media_missing", "spooled_mails")
LATER_COUNTS = ("media_refused", "spool_refused")  # absent from backups of older versions


class BackupError(RuntimeError):
    pass


class Refused(ValueError):
    """One file that is not copied, and why."""


def shown(value: object, limit: int = 80) -> str:
    """A name from the outside, safe to print on one line of a terminal."""
    text = ascii(value)
    return text if len(text) <= limit else text[:limit] + "..."


def copy_file(source: Path, target: Path) -> bool:
    """Copy the regular file *source* to the new name *target*; False if *source* is gone (retention removed it).

    Never through a symbolic link: neither at *source* (``O_NOFOLLOW``; a caller that resolved the path has
    already checked where it lands) nor at *target* (``O_EXCL`` refuses any existing name, a link included).
    A FIFO or device is refused without blocking on it (``O_NONBLOCK``)."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused("a symbolic link") from None
        raise
    with os.fdopen(fd, "rb") as reader:
        status = os.fstat(reader.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise Refused("not a regular file")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                          stat.S_IMODE(status.st_mode) & 0o666)
        except (FileExistsError, NotADirectoryError):
            raise Refused("clashes with another file of the same name") from None
        with os.fdopen(out, "wb") as writer:
            while chunk := reader.read(1024 * 1024):
                writer.write(chunk)
        os.utime(target, ns=(status.st_atime_ns, status.st_mtime_ns))
    return True


def tree_files(root: Path) -> Iterator[PurePosixPath]:
    """Every file under the directory *root*, relative to it; raises Refused for a symbolic link or anything
    but directories and regular files (iterative: a deep tree is no recursion limit to hit)."""
    pending = [PurePosixPath()]
    while pending:
        relative = pending.pop()
        with os.scandir(root.joinpath(*relative.parts)) as entries:
            for entry in entries:
                name = relative / entry.name
                if entry.is_symlink():
                    raise Refused(f"{shown(name.as_posix())} is a symbolic link")
                if entry.is_dir(follow_symlinks=False):
                    pending.append(name)
                elif entry.is_file(follow_symlinks=False):
                    yield name
                else:
                    raise Refused(f"{shown(name.as_posix())} is not a regular file")


def check_backup(source: Path) -> dict[str, Any]:
    """The backup's manifest, with checked types, once all of *source* passed; otherwise BackupError."""
    if not source.is_dir():
        raise BackupError(f"{source} is not a directory")
    for name in (MANIFEST, DB_NAME):
        _regular_file(source / name, what=f"{source} is not a vmond backup (no {MANIFEST} or {DB_NAME})")
    manifest = read_manifest(source / MANIFEST)
    check_database(source / DB_NAME, manifest["schema"])
    try:
        for tree in ("media", "spool"):
            if os.path.lexists(source / tree):
                _check_tree(source, tree)
    except Refused as exc:
        raise BackupError(f"refused the backup: {exc}") from None
    except OSError as exc:
        raise BackupError(f"cannot read the backup: {exc}") from None
    return manifest


def _regular_file(path: Path, what: str) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        raise BackupError(what) from None
    if stat.S_ISLNK(mode):
        raise BackupError(f"refused the backup: {path.name} is a symbolic link")
    if not stat.S_ISREG(mode):
        raise BackupError(f"refused the backup: {path.name} is not a regular file")


def _check_tree(source: Path, tree: str) -> None:
    top = source / tree
    if top.is_symlink() or not top.is_dir():
        raise Refused(f"{tree} is a symbolic link" if top.is_symlink() else f"{tree} is not a directory")
    for name in tree_files(top):
        if tree == "spool" and (len(name.parts) != 2 or name.parts[0] != "new"
                                or not NAME_PATTERN.fullmatch(name.parts[1])):
            raise Refused(f"spool/{shown(name.as_posix())} is not a spooled mail")


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest's fields, each checked for its type and range (the rest is ignored)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # checked a moment ago, not trusted since
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BackupError(f"refused the backup: {MANIFEST} is not a regular file")
        raw = handle.read(MANIFEST_MAX_BYTES + 1)
    if len(raw) > MANIFEST_MAX_BYTES:
        raise BackupError(f"refused the backup: {MANIFEST} is larger than {MANIFEST_MAX_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise BackupError(f"refused the backup: {MANIFEST} is not JSON") from None
    if not isinstance(data, dict):
        raise BackupError(f"refused the backup: {MANIFEST} is not a JSON object")

    def bad(key: str, expected: str) -> BackupError:
        return BackupError(f"refused the backup: {MANIFEST}: {key} is {shown(data.get(key), 40)}, not {expected}")

    manifest: dict[str, Any] = {}
    for key in (*COUNTS, *LATER_COUNTS, "schema"):
        value = data.get(key, 0 if key in LATER_COUNTS else None)
        if type(value) is not int or not 0 <= value < 2**53:
            raise bad(key, "a count")
        manifest[key] = value
    if manifest["schema"] < 1:
        raise bad("schema", "a schema version")
    if manifest["schema"] > migrations.LATEST:
        raise BackupError(f"the backup's schema {manifest['schema']} is newer than this vmond understands")
    version = data.get("vmond")
    if not isinstance(version, str) or not 0 < len(version) <= 40 or not version.isprintable():
        raise bad("vmond", "a version")
    manifest["vmond"] = version
    try:
        manifest["taken_at"] = datetime.fromisoformat(data.get("taken_at", "")).isoformat()
    except (TypeError, ValueError):
        raise bad("taken_at", "a time") from None
    seconds = data.get("seconds", 0)
    if type(seconds) not in (int, float) or not math.isfinite(seconds) or seconds < 0:
        raise bad("seconds", "a duration")
    manifest["seconds"] = seconds
    return manifest


def check_database(path: Path, schema: int | None = None) -> None:
    """The database at *path* is a sound SQLite file of a schema this vmond knows (the one the manifest says,
    when given) whose media paths all stay inside the media directory. Opened read-only: nothing is written."""
    uri = f"file:{quote(str(path))}?mode=ro&immutable=1"
    try:
        with closing(sqlite3.connect(uri, uri=True)) as db:
            if db.execute("PRAGMA quick_check(1)").fetchone()[0] != "ok":
                raise BackupError(f"refused the backup: {DB_NAME} is damaged (PRAGMA quick_check)")
            version = migrations.schema_version(db)
            if version > migrations.LATEST:
                raise BackupError(f"the backup's schema {version} is newer than this vmond understands")
            if schema is not None and version != schema:
                raise BackupError(f"refused the backup: {DB_NAME} has schema {version}, its manifest says {schema}")
            for (value,) in db.execute(MEDIA_PATHS):
                try:
                    media_relpath(value)
                except ValueError as exc:
                    raise BackupError(f"refused the backup: {DB_NAME} names the media file {shown(value)}: "
                                      f"{exc}") from None
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"refused the backup: {DB_NAME} is not a vmond database ({exc})") from None
