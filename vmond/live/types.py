"""What live view's workers hand back to the daemon, in a module without PyAV: the daemon process unpickles
these and never imports PyAV (and FFmpeg's tens of megabytes) itself; only the worker processes do."""

from __future__ import annotations

from dataclasses import dataclass


class CameraError(Exception):
    """What went wrong, fit to show a guard: *status* is the HTTP status the API answers with (502: the camera
    answered wrongly or not at all; 504: it did not answer in time; 503: busy or stopped; 404/409: no such
    camera, or no stream to show), *message* never contains the URL."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)  # both in args: the error pickles back from the worker
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Limits:
    open_timeout: float = 5.0  # seconds to connect and get the stream's description
    read_timeout: float = 5.0  # seconds without a byte from the camera
    max_packets: int = 600  # packets read without a picture before giving up (a 30 fps camera: 20 s of video)
    deadline: float = 10.0  # seconds for a whole snapshot, or for a stream's first picture


@dataclass(frozen=True)
class Picture:
    jpeg: bytes
    width: int
    height: int
