"""How many bytes the media directory holds, counted as files are written and removed.

Every change of a media file goes through :class:`MediaUsage.track` (the media store's writes, installs and
removals), which renames or removes the file and counts the difference under one lock, on whatever thread the
store runs. The count is the sum of the files' sizes; names starting with a dot are a write in progress
(temporary files) and are not counted until they are renamed into place.

After a start the count is measured once (:meth:`MediaUsage.measure`, a blocking walk run on a thread) while
the daemon already writes: each directory is counted under the lock, so that a file changed meanwhile is counted
either by the walk or by the change, never by both. Until the walk is done, :attr:`measured` is False and the
quota is not checked.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

STALE_TEMPORARY = 3600.0  # seconds: a temporary file this old was left by a crash (writes take seconds at most)


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class MediaUsage:
    """The media directory's size in bytes; thread-safe. *on_over* is called (on the writing thread) after a
    change that leaves the size above *quota*: it must be cheap and thread-safe."""

    def __init__(self, quota: int | None = None, on_over: Callable[[], None] | None = None) -> None:
        self.quota = quota
        self.on_over = on_over
        self._lock = threading.Lock()
        self._bytes = 0
        self._files = 0
        self._measured = False
        self._counted_dirs: set[str] | None = set()  # while measuring: directories the walk has counted
        self._missed_dirs: set[str] = set()  # while measuring: changed directories the walk has not seen yet
        self._stop = threading.Event()

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def measured(self) -> bool:
        return self._measured

    def over_quota(self) -> bool:
        return self._measured and self.quota is not None and self._bytes > self.quota

    def track(self, relpath: str, change: Callable[[], int]) -> None:
        """Run *change*, a rename into or a removal from *relpath*'s directory that returns the bytes it added
        (negative: removed), and count them. Blocking; any thread."""
        folder = str(PurePosixPath(relpath).parent)
        with self._lock:
            delta = change()
            if self._counted_dirs is None or folder in self._counted_dirs:
                self._bytes += delta
            else:
                self._missed_dirs.add(folder)  # the walk will count this directory as it is by then
        if delta > 0 and self.on_over is not None and self.over_quota():
            self.on_over()

    def measure(self, root: Path) -> None:
        """Count what *root* holds (blocking: run it on a thread). Also removes temporary files that a crash left
        behind. Writers may go on meanwhile; see the module's docstring."""
        started = time.monotonic()
        for folder, _, _ in os.walk(root):
            if self._stop.is_set():
                return
            relative = Path(folder).relative_to(root).as_posix()
            self._scan(root, relative, clean=True)  # the slow part, unlocked: reads the disk into the cache
            self._count_dir(root, relative)
        while not self._stop.is_set():
            with self._lock:
                missed = self._missed_dirs - (self._counted_dirs or set())
                if not missed:
                    self._counted_dirs, self._missed_dirs, self._measured = None, set(), True
                    break
            for relative in missed:  # made while we walked
                self._count_dir(root, relative)
        if not self._measured:
            return  # stopped
        log.info("media: %.1f MB in %d file(s) (measured in %.1f s)", self._bytes / 1e6, self._files,
                 time.monotonic() - started)
        if self.on_over is not None and self.over_quota():
            self.on_over()

    def stop_measuring(self) -> None:
        """Make a walk in progress give up (the daemon is stopping); any thread."""
        self._stop.set()

    def _count_dir(self, root: Path, relative: str) -> None:
        with self._lock:
            assert self._counted_dirs is not None
            if relative in self._counted_dirs:
                return
            size, files = self._scan(root, relative)
            self._bytes += size
            self._files += files
            self._counted_dirs.add(relative)

    @staticmethod
    def _scan(root: Path, relative: str, clean: bool = False) -> tuple[int, int]:
        """Bytes and number of the finished files directly in one directory (removing stale temporaries)."""
        size = files = 0
        try:
            entries = list(os.scandir(root / relative))
        except (FileNotFoundError, NotADirectoryError):
            return 0, 0
        stale = time.time() - STALE_TEMPORARY
        for entry in entries:
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not entry.name.startswith("."):
                size += stat.st_size
                files += 1
            elif clean and stat.st_mtime < stale:
                log.info("media: removing %s, a temporary file left by an interrupted write", entry.path)
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass
        return size, files
