"""Small durable-file helpers shared by the spool, the media store and the backup."""

from __future__ import annotations

import os
from pathlib import Path


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_file(fd: int) -> None:
    """``os.fsync``, a seam that tests replace to inject a failure at exactly this point."""
    os.fsync(fd)


def fsync_path(path: Path) -> None:
    """Make the file at *path* durable, never through a symbolic link (``O_NOFOLLOW`` refuses one)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        fsync_file(fd)
    finally:
        os.close(fd)


def fsync_directory(path: Path) -> None:
    """Make a rename or a new name in *path* durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
