"""Where media files live under ``data_dir/media``, and how they are written durably and counted.

Names are chosen by vmond (never taken from a mail) and are deterministic for a given spool entry, so a replay
after a crash overwrites the same files instead of leaving copies. Every write, install and removal of a media
file goes through this store, which counts it in :attr:`MediaStore.usage` as it happens (the disk keeper's
quota is checked against that count).
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from pathlib import Path, PurePosixPath

from vmond.media.usage import MediaUsage, file_size
from vmond.util import fsutil
from vmond.util.fsutil import fsync_directory, write_all


def media_relpath(value: object) -> PurePosixPath:
    """*value* as a path inside the media directory, or ValueError saying why it is not one. Lexical only: a
    reader that must not follow a symbolic link out also resolves the result and checks where it lands."""
    if not isinstance(value, str) or not value:
        raise ValueError("not a file name")
    pure = PurePosixPath(value)
    if pure.is_absolute():
        raise ValueError("an absolute path")
    if ".." in pure.parts:
        raise ValueError("leaves the media directory")
    if "\0" in value or not pure.parts:
        raise ValueError("not a file name")
    return pure


_NO_LINKS = (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK)  # a hard link cannot be made here


def stage_file(folder: str, data: bytes) -> str:
    """Write *data* durably (fsync) to a new file in *folder*, a media store's :attr:`MediaStore.staging`
    folder; returns its path. Blocking; for the parser worker, which stages a mail's pictures so that only their
    names cross to the daemon's process (:meth:`MediaStore.install_staged` puts them in place)."""
    path = os.path.join(folder, f"{uuid.uuid4().hex}.part")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        try:
            write_all(fd, data)
            fsutil.fsync_file(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return path


class MediaStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        # Files another process wrote for us to install (:func:`stage_file`): beside the media directory, not in
        # it (not counted, never served), on the same file system (installed by a link, not a copy).
        self.staging = root.with_name(f"{root.name}-staging")
        self.usage = MediaUsage()  # measured by the disk keeper after a start, then kept by every change here

    def prepare(self) -> None:
        """Blocking: the folders, and no staged file left from before a crash."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(exist_ok=True)
        self.clear_staging()

    def clear_staging(self) -> None:
        """Remove every staged file. Blocking; only while nothing is being staged or installed (before the
        pipeline starts, or when it has drained the spool)."""
        with contextlib.suppress(FileNotFoundError), os.scandir(self.staging) as leftovers:
            for leftover in leftovers:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover.path)

    def resolve(self, relpath: str) -> Path:
        """The absolute path of a stored file; refuses anything that would leave the media directory."""
        try:
            pure = media_relpath(relpath)
        except ValueError as exc:
            raise ValueError(f"bad media path {relpath!r}: {exc}") from None
        return self.root.joinpath(*pure.parts)

    def write_sync(self, relpath: str, data: bytes, sync_directory: bool = True) -> None:
        """Write *data* durably (temporary file, fsync, rename, fsync directory). Blocking.

        Without *sync_directory* the rename is durable only after :meth:`sync_directories` (one fsync for the
        several files of a mail, which share their directory)."""
        target = self.resolve(relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            try:
                write_all(fd, data)
                fsutil.fsync_file(fd)
            finally:
                os.close(fd)
            self._rename(tmp, target, relpath)
            if sync_directory:
                fsync_directory(target.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def install_staged(self, staged: str, relpath: str) -> None:
        """Put a copy of the durable staged file *staged* at *relpath* (a hard link, so the staged file may be
        installed for several cameras, then discarded); durable once its folder is synced, as with
        ``write_sync(sync_directory=False)``. Blocking."""
        target = self.resolve(relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            os.link(staged, tmp)
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise
            # Another file system after all, or one without hard links (FAT on a USB disk): a copy.
            with open(staged, "rb") as source:
                self.write_sync(relpath, source.read(), sync_directory=False)
            return
        try:
            self._rename(tmp, target, relpath)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def sync_directories(self, relpaths: list[str]) -> None:
        """Make the renames of files written without ``sync_directory`` durable: each folder fsynced once."""
        for folder in dict.fromkeys(self.resolve(relpath).parent for relpath in relpaths):
            fsync_directory(folder)

    def staging_path(self, relpath: str) -> Path:
        """A temporary name next to *relpath* for a file another process writes (a clip from the encoder);
        :meth:`install_sync` then puts it in place. Not counted until installed."""
        target = self.resolve(relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.with_name(f".{target.name}.{uuid.uuid4().hex}.new")

    def install_sync(self, staged: Path, relpath: str) -> None:
        """Rename the durable file *staged* (from :meth:`staging_path`) to *relpath*. Blocking."""
        target = self.resolve(relpath)
        if staged.parent != target.parent:
            raise ValueError(f"{staged} is not next to {relpath!r}")
        self._rename(staged, target, relpath)
        fsync_directory(target.parent)

    def _rename(self, source: Path, target: Path, relpath: str) -> None:
        def rename() -> int:
            before = file_size(target)  # a replay or a remade clip replaces a file that is counted already
            os.replace(source, target)
            return file_size(target) - before

        self.usage.track(relpath, rename)

    def delete_sync(self, relpath: str) -> int:
        """Remove a stored file (if it is there); returns the bytes it held. Blocking."""
        target = self.resolve(relpath)
        removed = 0

        def remove() -> int:
            nonlocal removed
            removed = file_size(target)
            target.unlink(missing_ok=True)
            return -removed

        self.usage.track(relpath, remove)
        return removed
