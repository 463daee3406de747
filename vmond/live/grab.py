"""Reading a camera's RTSP stream with PyAV: open it with bounds, decode keyframes, make small JPEGs.

Pure and blocking, no asyncio: only worker processes run this (FFmpeg's network and codec code can hang or
crash; that must cost a worker, never the daemon's event loop). :func:`snapshot` is the snapshot worker's task;
:mod:`vmond.live.work` runs it, and its stream reader uses :func:`open_stream` and :func:`pictures`.

Failures become :class:`CameraError` with a message for the guard. PyAV puts the URL, and so the camera's
password, into its exceptions' text: messages here are built from the exception's type and errno only, and
FFmpeg's own log is silenced in the worker for the same reason.
"""

from __future__ import annotations

import errno
import functools
import io
import math
import time
from collections.abc import Callable, Iterable, Iterator

import av
import av.logging

from vmond.live.types import CameraError, Limits, Picture

# Every picture of these is a keyframe: "keyframes only" saves nothing, so only the pictures shown are decoded.
INTRA_ONLY = frozenset({"mjpeg", "jpeg2000"})
MAX_ACCESS_UNIT = 8 << 20  # bytes of one picture's packets put together (a 4K keyframe is ~1 MB)


@functools.cache
def quiet_ffmpeg() -> None:
    """FFmpeg logs URLs, and a worker has no log configuration anyway: the errors reach the daemon as values.
    PyAV 13+ takes None (no log callback at all); older ones a level."""
    try:
        av.logging.set_level(None)
    except TypeError:
        av.logging.set_level(av.logging.PANIC)


def open_stream(url: str, limits: Limits) -> av.container.InputContainer:
    """The camera's stream, opened over TCP (RTP over UDP is lost to NAT and firewalls, and a lost packet smears
    a keyframe), with socket and open timeouts; raises :class:`CameraError`."""
    quiet_ffmpeg()
    options = {
        "rtsp_transport": "tcp",
        "timeout": str(int(limits.read_timeout * 1_000_000)),  # socket I/O, also the TCP connect, microseconds
        # The SDP says what the stream is; probing frames only delays the first picture by seconds.
        "analyzeduration": "0",
        "probesize": "32",
        "user_agent": "vmond",
    }
    started = time.monotonic()
    try:
        return av.open(url, "r", options=options, timeout=(limits.open_timeout, limits.read_timeout))
    except Exception as exc:  # noqa: BLE001 - PyAV raises FFmpegError, OSError and ValueError subclasses
        raise describe(exc, time.monotonic() - started, limits.open_timeout) from None


def describe(exc: BaseException, elapsed: float, timeout: float) -> CameraError:
    """A failure to open or read, as words for the guard (from the type and errno: never ``str(exc)``)."""
    name = type(exc).__name__
    if name == "HTTPUnauthorizedError":
        return CameraError(502, "authorization failed: the camera refused the user name or password in its "
                                "RTSP URL (RTSP 401)")
    if name == "HTTPForbiddenError":
        return CameraError(502, "access denied: the camera's user may not watch this stream (RTSP 403)")
    if name == "HTTPNotFoundError":
        return CameraError(502, "no such stream on the camera (RTSP 404): check the path in the RTSP URL")
    if name.startswith("HTTP"):
        return CameraError(502, "the camera refused the request (RTSP error)")
    code = getattr(exc, "errno", None)
    if isinstance(exc, ConnectionRefusedError) or code == errno.ECONNREFUSED:
        return CameraError(502, "camera unreachable: connection refused (is the RTSP port right, is the camera on?)")
    if isinstance(exc, TimeoutError) or code == errno.ETIMEDOUT or name == "ExitError" or elapsed >= timeout * 0.9:
        return CameraError(504, f"no answer from the camera within {timeout:g} s")
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return CameraError(502, "camera unreachable: no route to its address")
    if code == errno.ECONNRESET:
        return CameraError(502, "the camera closed the connection")
    if name == "InvalidDataError":
        return CameraError(502, "the camera's answer is not an RTSP stream vmond can read")
    if code == errno.EIO:  # FFmpeg's catch-all, e.g. a host name that does not resolve
        return CameraError(502, "camera unreachable: network error (does the host name in the RTSP URL resolve?)")
    return CameraError(502, f"the stream could not be read ({name})")


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    streams = container.streams
    # PyAV's stub says a stream always has a codec context; PyAV gives None for a codec FFmpeg cannot decode.
    usable = [s for s in streams.video if s.codec_context is not None]  # type: ignore[redundant-expr]
    if not usable:
        kinds = ", ".join(sorted({s.type for s in streams})) or "nothing"
        raise CameraError(502, f"unsupported stream: the camera sends no video vmond can decode (it sends: {kinds})")
    return usable[0]


def access_units(packets: Iterable[av.Packet[av.video.stream.VideoStream]]) -> Iterator[bytes]:
    """The packets of each picture put together.

    FFmpeg's RTP reader can hand over one picture in several packets (a camera that sends its parameter sets
    in-band and codes a picture in slices: the marker bit goes out early), and the decoder then makes each
    half a picture of its own, the rest grey-green. Packets with the same timestamp are one picture; the very
    first packet often has no timestamp yet and belongs to the picture after it."""
    held: bytearray | None = None
    held_pts: int | None = None
    first = True
    for packet in packets:
        if packet.size == 0:
            continue
        data = bytes(packet)
        pts = packet.pts
        if held is not None:
            same = (pts is not None and pts == held_pts) or (first and held_pts is None)
            first = False
            if same and len(held) + len(data) <= MAX_ACCESS_UNIT:
                held += data
                held_pts = pts
                continue
            yield bytes(held)
        held, held_pts = bytearray(data), pts
    if held is not None:
        yield bytes(held)


def pictures(container: av.container.InputContainer, stream: av.video.stream.VideoStream, *, interval: float,
             limits: Limits, first_by: float, keyframe_gap: float = 2.0,
             keep_going: Callable[[], bool] | None = None) -> Iterator[av.VideoFrame]:
    """Decoded pictures, at most one per *interval* seconds, for as long as the camera sends.

    The first picture is the first keyframe. The frames after it are decoded until the second keyframe, to
    learn how often the camera sends one: at least every *keyframe_gap* seconds, and from then on only keyframes
    are decoded (``skip_frame = NONKEY``: the decoder skips the rest almost for free; skipping is safe at any
    point); less often, and every frame stays decoded, so that there still is a picture per *interval* (at more
    CPU). Raises :class:`CameraError` when the camera stops or sends nothing decodable, or no picture by
    *first_by* (a ``time.monotonic()`` value: a camera trickling packets without a keyframe must not hold a
    worker). *keep_going*, asked before each picture's packets are decoded, ends the pictures when it says no."""
    context = stream.codec_context
    context.thread_count = 1  # one picture at a time needs no decoder threads (and they cost memory)
    context.skip_frame = "NONKEY"  # until the first keyframe: what comes before it has no reference to decode from
    intra_only = context.name in INTRA_ONLY
    measuring = False  # between the first two keyframes
    last_shown = last_key = -math.inf
    without_picture = decode_errors = 0
    try:
        for data in access_units(container.demux(stream)):
            if keep_going is not None and not keep_going():
                return
            now = time.monotonic()
            if last_shown == -math.inf and now > first_by:
                raise CameraError(504, "no picture from the camera in time (no keyframe arrived)")
            if intra_only and now - last_shown < interval:
                continue
            try:
                frames = context.decode(av.Packet(data))
            except (av.error.FFmpegError, ValueError, OSError):
                decode_errors += 1  # a damaged picture; the next keyframe starts afresh
                frames = []
            if not frames:
                without_picture += 1
                if without_picture > limits.max_packets:
                    raise CameraError(502, _no_picture(context.name, limits.max_packets, decode_errors))
                continue
            without_picture = 0
            frame = frames[-1]
            if frame.key_frame and not intra_only:
                if last_key == -math.inf:
                    context.skip_frame = "DEFAULT"
                    measuring = True
                elif measuring:
                    measuring = False
                    if now - last_key <= keyframe_gap:
                        context.skip_frame = "NONKEY"
                last_key = now
            if now - last_shown >= interval * 0.9:  # a little slack: keyframes at exactly the interval all show
                last_shown = now
                yield frame
    except CameraError:
        raise
    except Exception as exc:  # noqa: BLE001 - a read error mid-stream, described without the URL
        raise describe(exc, 0.0, limits.read_timeout) from None
    raise CameraError(502, "the camera ended the stream")


def _no_picture(codec: str, packets: int, errors: int) -> str:
    detail = f"; {errors} could not be decoded" if errors else ""
    return f"no picture in {packets} packets of {codec} video{detail}: the camera's video cannot be decoded"


def to_jpeg(frame: av.VideoFrame, max_width: int, quality: int) -> Picture:
    """*frame* as a JPEG at most *max_width* wide (same aspect, even height), scaled and converted to RGB in one
    swscale pass: on a Raspberry Pi the JPEG encoding costs less than the pixels it does not have to see."""
    width = min(frame.width, max_width)
    height = max(2, round(frame.height * width / frame.width / 2) * 2)
    image = frame.reformat(width, height, "rgb24").to_image()
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return Picture(out.getvalue(), width, height)


def snapshot(url: str, max_width: int, quality: int, limits: Limits) -> Picture:
    """The first keyframe of the camera's stream as a JPEG: the snapshot worker's task."""
    first_by = time.monotonic() + limits.deadline
    container = open_stream(url, limits)
    try:
        stream = video_stream(container)
        for frame in pictures(container, stream, interval=0.0, limits=limits, first_by=first_by):
            return to_jpeg(frame, max_width, quality)
        raise AssertionError("unreachable: pictures() yields or raises")
    finally:
        close(container)


def close(container: av.container.InputContainer) -> None:
    try:
        container.close()  # sends RTSP TEARDOWN: the camera frees the session now, not at its timeout
    except Exception:  # noqa: BLE001, S110 - closing a broken stream may fail; nothing is left to do
        pass
