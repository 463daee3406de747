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


class MediaStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def resolve(self, relpath: str) -> Path:
        """The absolute path of a stored file; refuses anything that would leave the media directory."""
        pure = PurePosixPath(relpath)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts:
            raise ValueError(f"bad media path {relpath!r}")
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
