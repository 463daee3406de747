"""What the encoder worker hands back to the daemon: results and errors, in a module without PyAV.

The daemon process unpickles these; keeping them here means it never imports PyAV (and its tens of megabytes of
FFmpeg) itself: only the worker processes do.
"""

from __future__ import annotations

from dataclasses import dataclass


class ClipError(RuntimeError):
    """No clip can be made from these frames (fewer than two decodable, or the encoder failed)."""


@dataclass(frozen=True)
class ClipInfo:
    width: int
    height: int
    frames: int  # encoded
    skipped: int  # JPEGs that did not decode
    bytes: int
    encoder: str  # the one actually used
    duration: float  # seconds


class VideoRejected(ValueError):
    """The file is not a video vmond keeps as one; the message says why, for the event's flags and the log."""


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int
    height: int
    duration: float | None  # seconds; None when the file does not say (some fragmented MP4s)
    pix_fmt: str
    browser_playable: bool  # H.264, 8-bit 4:2:0, in an MP4 (not a QuickTime .mov)
