"""Where media files live under ``data_dir/media``, and how they are written durably.

Names are chosen by vmond (never taken from a mail) and are deterministic for a given spool entry, so a replay
after a crash overwrites the same files instead of leaving copies.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path, PurePosixPath

from vmond import fsutil
from vmond.fsutil import fsync_directory, write_all


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


class MediaStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def resolve(self, relpath: str) -> Path:
        """The absolute path of a stored file; refuses anything that would leave the media directory."""
        try:
            pure = media_relpath(relpath)
        except ValueError as exc:
            raise ValueError(f"bad media path {relpath!r}: {exc}") from None
        return self.root.joinpath(*pure.parts)

    def write_sync(self, relpath: str, data: bytes) -> None:
        """Write *data* durably (temporary file, fsync, rename, fsync directory). Blocking."""
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
            os.replace(tmp, target)
            fsync_directory(target.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def delete_sync(self, relpath: str) -> None:
        self.resolve(relpath).unlink(missing_ok=True)
