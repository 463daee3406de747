"""One camera's live stream in the daemon: the reader process, its latest picture, and the viewers sharing it.

The reader (:mod:`vmond.live.work`) runs in a process of its own; this side reads its records from a
socket without ever blocking the loop, keeps only the newest picture (a viewer that is slow skips pictures,
nothing queues up for it), and wakes the viewers when one arrives. A reader that crashes, hangs (no record for
:data:`STALL_TIMEOUT`) or reports an error ends the session with a :class:`CameraError` every viewer gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

from vmond.live import work
from vmond.live.types import CameraError
from vmond.live.work import StreamOptions

log = logging.getLogger(__name__)

STALL_TIMEOUT = 15.0  # seconds without a record from a streaming reader: it hangs, end it
STOP_GRACE = 3.0  # seconds a reader gets to close the stream (RTSP TEARDOWN) before it is killed


class Frame(NamedTuple):
    seq: int
    jpeg: bytes
    width: int
    height: int
    taken_at: datetime


class LiveSession:
    """Start with :meth:`start`; viewers call :meth:`next_frame`; :meth:`stop` ends it (and waits for that)."""

    def __init__(self, camera_id: int, url: str, options: StreamOptions,
                 on_end: Callable[[LiveSession], None] | None = None) -> None:
        self.camera_id = camera_id
        self._on_end = on_end  # told before the viewers are: a viewer asking again finds the failure recorded
        self.url = url  # never logged: it may hold the camera's password
        self._options = options
        self.viewers = 0
        self.latest: Frame | None = None
        self.error: CameraError | None = None
        self.ended = False
        self.stopping = False
        self.started_at = datetime.now(UTC)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._starting: asyncio.Future[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.idle_timer: asyncio.TimerHandle | None = None

    @property
    def frames(self) -> int:
        return self.latest.seq if self.latest is not None else 0

    @property
    def state(self) -> str:
        if self.ended:
            return "ended"
        if self.stopping:
            return "stopping"
        return "streaming" if self.latest is not None else "starting"

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"live-camera-{self.camera_id}")

    async def stop(self, reason: str) -> None:
        """End the stream (viewers get *reason*) and wait until the reader process is gone."""
        if not self.ended and not self.stopping:
            self.stopping = True
            self.error = self.error or CameraError(503, reason)
            if self._task is not None:
                self._task.cancel()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_ended(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)

    async def next_frame(self, after: int) -> Frame:
        """The newest picture if it is newer than sequence number *after*, else the next one to arrive.
        Raises the session's :class:`CameraError` once it has ended."""
        while True:
            latest = self.latest
            if latest is not None and latest.seq > after and not self.ended:
                return latest
            if self.ended:
                raise self.error or CameraError(503, "live view stopped")
            await self._wakeup.wait()

    def _wake(self) -> None:
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    # --- the reader process ------------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            reader = await self._spawn()
            await self._read(reader)
        except CameraError as exc:
            self.error = self.error or exc
        except asyncio.CancelledError:
            self.error = self.error or CameraError(503, "live view stopped")
            raise
        except Exception:  # noqa: BLE001 - a bug here must end this stream, not the daemon
            log.exception("live: camera %d: the stream failed", self.camera_id)
            self.error = self.error or CameraError(502, "live view failed (the server's log says why)")
        finally:
            self.ended = True  # viewers hear of it now, not after the reader has wound down
            if self._on_end is not None:
                self._on_end(self)
            self._wake()
            await asyncio.shield(self._reap())  # cancelled again (shutdown): the reaping still completes

    async def _spawn(self) -> asyncio.StreamReader:
        ours, theirs = socket.socketpair()
        try:
            context = multiprocessing.get_context("forkserver")  # a fresh interpreter, not a fork of this one
            process = context.Process(target=work.run, args=(self.url, theirs, self._options),
                                      name=f"vmond-live-{self.camera_id}", daemon=True)
            self._process = process
            # Starting talks to the fork server (and may start it): never on the loop. Shielded: once asked
            # for, the process exists, and _reap must be able to wait for it.
            self._starting = asyncio.get_running_loop().run_in_executor(None, process.start)
            await asyncio.shield(self._starting)
        finally:
            theirs.close()  # the reader has its own copy; ours would keep the socket open after it exits
        reader, self._writer = await asyncio.open_unix_connection(sock=ours)
        return reader

    async def _read(self, reader: asyncio.StreamReader) -> None:
        timeout = self._options.limits.open_timeout + self._options.limits.deadline + 5.0  # the first picture
        while True:
            try:
                async with asyncio.timeout(timeout):  # not wait_for(): it can swallow a cancellation on 3.11
                    header = await reader.readexactly(work.RECORD.size)
                kind, length = work.RECORD.unpack(header)
                if length > work.MAX_RECORD:
                    raise CameraError(502, "live view failed: the stream reader sent garbage")
                async with asyncio.timeout(STALL_TIMEOUT):
                    payload = await reader.readexactly(length)
            except asyncio.IncompleteReadError:
                raise CameraError(502, await self._reader_gone()) from None
            except TimeoutError:
                raise CameraError(504, f"no picture from the camera for {timeout:.0f} s") from None
            timeout = STALL_TIMEOUT
            if kind == work.ERROR:
                problem = json.loads(payload)
                raise CameraError(int(problem["status"]), str(problem["error"]))
            if kind == work.PICTURE:
                width, height = work.SIZE.unpack_from(payload)
                self.latest = Frame(self.frames + 1, payload[work.SIZE.size:], width, height,
                                    datetime.now(UTC))
                self._wake()

    async def _reader_gone(self) -> str:
        """Why the reader closed the socket without saying so (a crash, the kernel's OOM killer)."""
        process = self._process
        if process is not None:
            await self._wait_exit(process, 1.0)
            code = process.exitcode
            if code is not None and code < 0:
                return f"live view failed: the stream reader died (signal {-code})"
        return "live view failed: the stream reader stopped unexpectedly"

    @staticmethod
    async def _wait_exit(process: multiprocessing.process.BaseProcess, timeout: float) -> bool:
        """Wait without blocking the loop (the process's sentinel becomes readable when it ends)."""
        loop = asyncio.get_running_loop()
        ended = loop.create_future()
        sentinel = process.sentinel

        def on_exit() -> None:
            if not ended.done():
                ended.set_result(None)

        loop.add_reader(sentinel, on_exit)
        try:
            async with asyncio.timeout(timeout):
                await ended
            return True
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(sentinel)

    async def _reap(self) -> None:
        """Close our end (the reader sees it and tears the RTSP session down), then make sure it is gone."""
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()
        if self._starting is not None:
            with contextlib.suppress(Exception):
                await self._starting
        process = self._process
        if process is None or process.pid is None:
            return
        began = time.monotonic()
        if not await self._wait_exit(process, STOP_GRACE):
            log.warning("live: camera %d: the stream reader did not stop within %.0f s; killing it",
                        self.camera_id, STOP_GRACE)
            process.kill()
            await self._wait_exit(process, STOP_GRACE)
        process.join(0)  # it has ended: this only collects its status
        log.debug("live: camera %d: reader exited with %s after %.2f s", self.camera_id, process.exitcode,
                  time.monotonic() - began)
        with contextlib.suppress(ValueError):
            process.close()
