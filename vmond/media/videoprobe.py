"""Vetting videos that cameras attach to alarm mails (MP4 from a hostile network). Pure and blocking: the daemon
runs :func:`probe_video` in a worker process, with a time limit of its own.

Only FFmpeg's MP4/QuickTime demuxer is reachable (automatic format detection would also offer playlist and
concat demuxers, which open other files), probing is bounded in bytes and time, the stream count, size, length
and codec are checked before a frame is decoded, and then only a couple of frames are, to prove it decodes.
"""

from __future__ import annotations

from pathlib import Path

import av

from vmond.media.cliptypes import VideoInfo, VideoRejected

ALLOWED_CODECS = frozenset({"h264", "hevc", "mjpeg", "mpeg4"})
MAX_STREAMS = 4  # video, audio, a metadata track or two; hostile files declare thousands
FRAMES_TO_DECODE = 2
MAX_PACKETS = 120  # demuxed while looking for those frames: enough for any sane GOP start
_OPEN_OPTIONS = {
    "probesize": str(5_000_000),  # bytes
    "analyzeduration": str(5_000_000),  # microseconds of media
    "max_streams": str(32),  # FFmpeg's own cap, so a hostile header cannot allocate thousands before we count
    "enable_drefs": "0",  # never follow a track's reference to another file (the default; said here on purpose)
}
_IO_TIMEOUT = 10.0  # seconds; the worker's task timeout is the real bound
_BROWSER_PIX_FMTS = ("yuv420p", "yuvj420p")  # 8-bit 4:2:0; yuvj only adds a full-range tag, which browsers honour


def probe_video(path: Path, *, max_seconds: float = 300, max_pixels: int = 8_294_400) -> VideoInfo:
    """Check that *path* is a sane, decodable MP4 within the limits; raises :class:`VideoRejected` otherwise."""
    with path.open("rb") as file:
        head = file.read(12)
    if not head:
        raise VideoRejected("empty file")
    try:
        container = av.open(str(path), "r", format="mp4", options=dict(_OPEN_OPTIONS), timeout=_IO_TIMEOUT)
    except (av.error.FFmpegError, ValueError, OSError) as exc:  # PyAV wraps FFmpeg's errors in all three
        raise VideoRejected(f"not a readable MP4: {_short(exc)}") from exc
    try:
        return _check(container, head, max_seconds, max_pixels)
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoRejected(f"unreadable: {_short(exc)}") from exc
    finally:
        container.close()


def _check(container: av.container.InputContainer, head: bytes, max_seconds: float, max_pixels: int) -> VideoInfo:
    streams = container.streams
    if len(streams) > MAX_STREAMS:
        raise VideoRejected(f"{len(streams)} streams (at most {MAX_STREAMS})")
    if not streams.video:
        raise VideoRejected("no video stream")
    stream = streams.video[0]
    context = stream.codec_context
    codec = context.name
    if codec not in ALLOWED_CODECS:
        raise VideoRejected(f"codec {codec} not accepted")
    width, height = context.width, context.height
    _check_size(width, height, max_pixels)
    duration = _duration(container, stream)
    if duration is not None and not 0 <= duration <= max_seconds:
        raise VideoRejected(f"duration {duration:.1f} s (at most {max_seconds:g} s)")
    # One thread (no pool of decoder threads for a check), and the decoder refuses a later, larger size too.
    context.thread_count = 1
    context.options = {"max_pixels": str(max_pixels)}
    pix_fmt = _decode_some(container, stream, max_pixels)
    playable = codec == "h264" and pix_fmt in _BROWSER_PIX_FMTS and _is_mp4_brand(head)
    return VideoInfo(codec, width, height, duration, pix_fmt, playable)


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise VideoRejected(f"no picture size ({width}x{height})")
    if width * height > max_pixels:
        raise VideoRejected(f"{width}x{height} is more than {max_pixels} pixels")


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000  # AV_TIME_BASE
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    return None


def _decode_some(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 max_pixels: int) -> str:
    """Decode up to :data:`FRAMES_TO_DECODE` frames from at most :data:`MAX_PACKETS` packets; the pixel format."""
    decoded, pix_fmt, last_error = 0, "", ""
    for count, packet in enumerate(container.demux(stream), 1):
        if count > MAX_PACKETS:
            break
        try:
            frames = packet.decode()
        except (av.error.FFmpegError, ValueError) as exc:  # a damaged packet: the next may still decode
            last_error = _short(exc)
            continue
        for frame in frames:
            _check_size(frame.width, frame.height, max_pixels)
            decoded += 1
            pix_fmt = frame.format.name
            if decoded >= FRAMES_TO_DECODE:
                return pix_fmt
    if decoded == 0:
        raise VideoRejected(f"no frame decodes{': ' + last_error if last_error else ''}")
    return pix_fmt  # a one-frame video


def _is_mp4_brand(head: bytes) -> bool:
    """An ``ftyp`` box whose major brand is not QuickTime's: browsers are only sure to play the MP4 family."""
    return head[4:8] == b"ftyp" and head[8:12] != b"qt  "


def _short(exc: BaseException) -> str:
    # FFmpeg's message without the file's path (a server detail the event's flags need not show).
    return f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"[:300]
