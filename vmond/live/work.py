"""What live view's worker processes run: the snapshot task, and the live-view reader.

PyAV is imported inside these functions (by :mod:`vmond.live.grab`): the daemon refers to them, only the
workers run them, and the fork server preloads grab. Blocking, no asyncio.

The reader is one process per camera stream, forked from the daemon's fork server, that reads the RTSP stream
and writes small JPEGs to the daemon over a socket. A process of its own (not a pool task) because it runs for
as long as someone watches, and because FFmpeg's network and codec code may hang or crash: that ends this
process, never the event loop.

Records on the socket, reader -> daemon: a 1-byte kind, a 4-byte big-endian length, the payload.

- ``P``: a picture: width and height (4 bytes each, big-endian), then the JPEG
- ``E``: the last record: JSON ``{"status": int, "error": str}``, what went wrong, worded for the guard

The daemon never writes. It stops the reader by closing its end, which the reader sees between two packets,
then it closes the stream (RTSP TEARDOWN: the camera frees the session at once) and exits. The socket is the
bounded channel: when the daemon does not read, the reader's send blocks, and after :data:`SEND_TIMEOUT` it gives
up rather than buffer.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import socket
import struct
import time
from dataclasses import dataclass

from vmond.live.types import CameraError, Limits, Picture

RECORD = struct.Struct(">cI")
SIZE = struct.Struct(">II")
PICTURE = b"P"
ERROR = b"E"
MAX_RECORD = 16 << 20  # a JPEG of at most live width is far below; anything larger is a broken reader
SEND_TIMEOUT = 10.0  # seconds the daemon may leave a picture unread before the reader gives up
SEND_BUFFER = 256 * 1024  # bytes in flight to the daemon: a few pictures, not a backlog


@dataclass(frozen=True)
class StreamOptions:
    fps: float
    max_width: int
    quality: int
    limits: Limits
    nice: int = 10
    memory_limit: int | None = 1 << 30


def _settle(options: StreamOptions) -> None:
    """As the worker pool's processes: the daemon decides when this ends (not a Ctrl-C in its terminal), it
    yields the CPU to mail intake, and a runaway decoder meets a memory ceiling."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if options.nice:
        os.nice(options.nice)
    if options.memory_limit:
        resource.setrlimit(resource.RLIMIT_AS, (options.memory_limit, options.memory_limit))


def _send(sock: socket.socket, kind: bytes, payload: bytes) -> None:
    sock.sendall(RECORD.pack(kind, len(payload)) + payload)


def _daemon_left(sock: socket.socket) -> bool:
    """The daemon closed its end (it never writes, so "readable" means end of file)."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def snapshot(url: str, max_width: int, quality: int, limits: Limits) -> Picture:
    """The snapshot worker's task: the first keyframe of the stream as a JPEG; raises CameraError."""
    from vmond.live import grab

    return grab.snapshot(url, max_width, quality, limits)


def run(url: str, sock: socket.socket, options: StreamOptions) -> None:
    """The reader process's main: stream pictures until the daemon closes the socket or the camera fails."""
    from vmond.live import grab

    _settle(options)
    sock.settimeout(SEND_TIMEOUT)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    limits = options.limits
    container = None
    try:
        first_by = time.monotonic() + limits.deadline
        container = grab.open_stream(url, limits)
        stream = grab.video_stream(container)
        for frame in grab.pictures(container, stream, interval=1 / options.fps, limits=limits, first_by=first_by,
                                   keep_going=lambda: not _daemon_left(sock)):
            picture = grab.to_jpeg(frame, options.max_width, options.quality)
            _send(sock, PICTURE, SIZE.pack(picture.width, picture.height) + picture.jpeg)
    except CameraError as exc:
        try:
            _send(sock, ERROR, json.dumps({"status": exc.status, "error": exc.message}).encode())
        except OSError:
            pass  # the daemon is gone: nobody to tell
    except OSError:
        pass  # the socket: the daemon closed it or stopped reading; either way this reader is done
    finally:
        if container is not None:
            grab.close(container)
        sock.close()
