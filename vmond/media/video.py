"""Alarm clips: a burst of camera JPEG snapshots becomes a short H.264 MP4 that browsers play.

:func:`encode_clip` is pure and blocking (no asyncio): the daemon runs it in a worker process it owns. It decodes
with FFmpeg's mjpeg decoder, scales and converts the colour range in one swscale pass, and encodes with libx264
(or a Raspberry Pi 4's hardware encoder, with libx264 as the fallback). ``out`` is either complete or absent:
the clip is written next to it, fsynced and renamed.

Vetting camera-sent videos lives in :mod:`vmond.media.videoprobe`; its API is re-exported here.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.video.reformatter import VideoReformatter

from vmond.media import avcompat
from vmond.media.cliptypes import ClipError, ClipInfo, VideoInfo, VideoRejected
from vmond.media.videoprobe import probe_video
from vmond.util import fsutil

__all__ = ["ClipError", "ClipInfo", "VideoInfo", "VideoRejected", "encode_clip", "probe_video",
           "DEFAULT_PRESET", "ENCODERS"]

log = logging.getLogger(__name__)

SOFTWARE = "libx264"
HARDWARE = "h264_v4l2m2m"
ENCODERS = ("auto", SOFTWARE, HARDWARE)
# Measured with bench/encode.py on camera-like 10-frame bursts: veryfast clips are 2.1-2.6 times smaller than
# ultrafast's at the same quality (PSNR 47 dB; its macroblock tree pays off on a mostly static scene) for 1.7-2.5
# times the CPU; superfast was no smaller than ultrafast and as slow as veryfast; tune=stillimage only made
# files larger. Callers that value CPU over storage pass preset="ultrafast".
DEFAULT_PRESET = "veryfast"
CRF = "23"
MAX_SOURCE_PIXELS = 50_000_000  # as vmond.media.images: beyond any camera sensor, a decompression bomb
# The hardware encoder has no constant-quality mode: libx264 at CRF 23 spent 0.28-0.55 bits per pixel on the
# bench's scenes, so a bit rate in that range.
HARDWARE_BITS_PER_PIXEL = 0.3
DECODE_THREADS = 2  # JPEG decoders, one thread and decoder context each: decoding is most of a quick clip's work
DECODE_AHEAD = 3  # JPEGs decoded (or being decoded) ahead of the encoder

# Tagged explicitly so browsers neither guess nor clip: limited range (converted below), and the BT.601
# matrix JPEG's YCbCr uses (kept: only the range is converted), which a player would otherwise take as BT.709 for HD.
_COLOUR_TAGS = {"color_range": "tv", "colorspace": "smpte170m"}

# An encoder that failed in this worker process is not tried again: a device that is missing stays missing
# (the pool replaces workers now and then, which retries it).
_failed_encoders: set[str] = set()


class _EncoderFailed(Exception):
    """The encoder could not be opened or refused a frame; the caller may try the next one."""


def encode_clip(frames: Iterable[bytes], out: Path, *, fps: float, max_width: int, encoder: str = "auto",
                preset: str = DEFAULT_PRESET, sync_directory: bool = True) -> ClipInfo:
    """Encode the JPEGs in *frames* into the MP4 *out*, *fps* frames a second, at most *max_width* wide.

    *sync_directory* False leaves the directory's fsync to a caller that renames *out* once more anyway (the
    file's own data is fsynced either way): one fsync less on the way to a clip, tens of ms on an SD card.

    Frames whose size differs from the first one's are letterboxed into the first one's (scaled) size. A JPEG
    that does not decode is skipped and counted; fewer than two good ones raise :class:`ClipError`.
    """
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, not {fps!r}")
    if max_width < 2:
        raise ValueError(f"max_width must be at least 2, not {max_width!r}")
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, not {encoder!r}")
    frames = list(frames)  # read twice if the hardware encoder fails
    for name in _encoder_order(encoder):
        try:
            return _write_clip(frames, out, name, fps, max_width, preset, sync_directory)
        except _EncoderFailed as exc:
            if name == SOFTWARE:
                raise ClipError(f"{SOFTWARE}: {exc}") from exc
            _failed_encoders.add(name)
            log.warning("video encoder %s failed (%s); using %s", name, exc, SOFTWARE)
    raise AssertionError("unreachable: libx264 is always the last encoder tried")


def hardware_encoder_present() -> bool:
    """Whether this machine seems to have a V4L2 memory-to-memory H.264 encoder (a Raspberry Pi 4's
    ``bcm2835-codec-encode``) and this FFmpeg can drive it. Only a hint for ``auto``: trying is the proof."""
    if HARDWARE not in av.codecs_available:
        return False
    try:
        devices = list(Path("/sys/class/video4linux").iterdir())
    except OSError:
        return False
    for device in devices:
        try:
            if "enc" in (device / "name").read_text().lower():
                return True
        except OSError:
            continue
    return False


def _encoder_order(encoder: str) -> list[str]:
    if encoder == SOFTWARE:
        return [SOFTWARE]
    wanted = encoder == HARDWARE or (encoder == "auto" and hardware_encoder_present())
    return [HARDWARE, SOFTWARE] if wanted and HARDWARE not in _failed_encoders else [SOFTWARE]


def _write_clip(frames: list[bytes], out: Path, encoder: str, fps: float, max_width: int, preset: str,
                sync_directory: bool) -> ClipInfo:
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    os.close(fd)
    temporary = Path(name)
    try:
        width, height, good, skipped = _encode(frames, temporary, encoder, fps, max_width, preset)
        fd = os.open(temporary, os.O_RDONLY)
        try:
            fsutil.fsync_file(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        os.replace(temporary, out)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if sync_directory:
        fsutil.fsync_directory(out.parent)
    return ClipInfo(width, height, good, skipped, size, encoder, good / fps)


def _encode(frames: list[bytes], path: Path, encoder: str, fps: float, max_width: int,
            preset: str) -> tuple[int, int, int, int]:
    """Write the clip to *path*; its width, height, frames encoded and JPEGs skipped."""
    rate = Fraction(fps).limit_denominator(1001)
    container = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
    try:
        stream: Any = None
        converter: _Converter | None = None
        good = skipped = 0
        for picture in _decode_ahead(frames):
            if picture is None:
                skipped += 1
                continue
            if stream is None or converter is None:
                width, height = fit_even(picture.width, picture.height, max_width)
                stream = _add_stream(container, encoder, width, height, rate, preset)
                converter = _Converter(width, height, 1 / rate)
            frame = converter.convert(picture)
            frame.pts = good
            good += 1
            _mux(container, stream, frame)
        if good < 2:
            raise ClipError(f"{good} decodable JPEG(s) of {good + skipped}: a clip needs at least 2")
        _mux(container, stream, None)
    except BaseException:
        try:
            container.close()
        except Exception:  # noqa: BLE001 - the first error is the one worth reporting; the file is deleted
            pass
        raise
    container.close()
    return width, height, good, skipped


def _decode_ahead(frames: list[bytes]) -> Iterator[av.VideoFrame | None]:
    """Decode the next JPEGs in helper threads while the caller converts and encodes this one: FFmpeg releases
    the GIL, so on a multi-core CPU decoding (about half of the work with ultrafast) overlaps encoding, and two
    JPEGs decode at once. A decoder context is not shared between threads; a bounded window, so a long burst is
    not decoded into memory at once."""
    decoders = threading.local()

    def decode(data: bytes) -> av.VideoFrame | None:
        decoder = getattr(decoders, "decoder", None)
        if decoder is None:
            decoder = decoders.decoder = jpeg_decoder()
        return decode_jpeg(decoder, data)

    with ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="vmond-jpeg") as pool:
        pending = deque(pool.submit(decode, data) for data in frames[:DECODE_AHEAD])
        for data in frames[DECODE_AHEAD:]:
            picture = pending.popleft().result()
            pending.append(pool.submit(decode, data))
            yield picture
        while pending:
            yield pending.popleft().result()


def jpeg_decoder() -> av.VideoCodecContext:
    """FFmpeg's mjpeg decoder, strict: by default it "conceals" a damaged JPEG into a grey smear instead of
    failing, and would allocate whatever size a header claims."""
    decoder = av.CodecContext.create("mjpeg", "r")
    decoder.options = {"err_detect": "explode", "max_pixels": str(MAX_SOURCE_PIXELS)}
    return decoder


def decode_jpeg(decoder: av.VideoCodecContext, data: bytes) -> av.VideoFrame | None:
    """The picture in *data*, or None if it does not decode."""
    if not data:  # an empty packet would mean "end of stream" to the decoder
        return None
    try:
        pictures = decoder.decode(av.Packet(data))
    except (av.error.FFmpegError, ValueError, OSError):  # PyAV wraps FFmpeg's errors in all three
        return None
    return pictures[0] if pictures else None


def fit_even(width: int, height: int, max_width: int) -> tuple[int, int]:
    """*width* x *height* scaled down to at most *max_width*, both even (4:2:0 chroma needs it), never larger."""
    even_width = max(2, min(width, max_width) // 2 * 2)
    even_height = max(2, min(height // 2 * 2, round(height * even_width / width / 2) * 2))
    return even_width, even_height


def _add_stream(container: Any, encoder: str, width: int, height: int, rate: Fraction, preset: str) -> Any:
    try:
        stream = container.add_stream(encoder, rate=rate)
    except ValueError as exc:  # this FFmpeg was built without it
        raise _EncoderFailed(str(exc)) from exc
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    options = dict(_COLOUR_TAGS)
    if encoder == SOFTWARE:
        # Threads: PyAV's default (x264's sliced threads, as many as it likes). Frame threads or fewer threads
        # made no measurable difference in CPU, wall time or size for clips of 5-10 frames.
        options.update(preset=preset, crf=CRF)
    else:
        stream.bit_rate = max(200_000, int(width * height * float(rate) * HARDWARE_BITS_PER_PIXEL))
    stream.codec_context.options = options
    return stream


def _mux(container: Any, stream: Any, frame: av.VideoFrame | None) -> None:
    try:
        packets = stream.encode(frame)
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise _EncoderFailed(str(exc)) from exc
    container.mux(packets)


class _Converter:
    """Decoded JPEG -> yuv420p frame of the clip's size, limited range, letterboxed when the aspect differs."""

    def __init__(self, width: int, height: int, time_base: Fraction) -> None:
        self.width, self.height = width, height
        self._reformatter = VideoReformatter()  # reused: one swscale context for the clip, not one per frame
        self._method, self._range_kwargs = avcompat.range_method()
        self._lut = avcompat.LutToLimited(width, height, time_base) if self._method == "lut" else None
        self._black = 16 if self._method == "swscale" else 0  # letterbox bars, before any lut
        self._fits: dict[tuple[int, int], tuple[int, int]] = {}

    def convert(self, picture: av.VideoFrame) -> av.VideoFrame:
        size = (picture.width, picture.height)
        fit = self._fits.get(size)
        if fit is None:
            fit = self._fits[size] = self._fit(*size)
        frame = self._reformatter.reformat(picture, fit[0], fit[1], "yuv420p", **self._range_kwargs)
        if fit != (self.width, self.height):
            frame = letterbox(frame, self.width, self.height, self._black)
        if self._lut is not None:
            frame.pts = 0
            frame = self._lut(frame)
        avcompat.clear_picture_type(frame)
        return frame

    def _fit(self, width: int, height: int) -> tuple[int, int]:
        scale = min(self.width / width, self.height / height)
        fit = (max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2))
        # Rounding to even sizes makes a same-aspect frame a pixel or two short: stretch that, no bars.
        if self.width - fit[0] <= 2 and self.height - fit[1] <= 2:
            return self.width, self.height
        return fit


def letterbox(picture: av.VideoFrame, width: int, height: int, black: int) -> av.VideoFrame:
    """*picture* (yuv420p, even size, fitting) centred on a black *width* x *height* frame.

    Row copies between plane buffers: a few hundred slice assignments per frame, only for frames whose size
    differs from the clip's first, and no numpy (Debian's python3-av does not bring it)."""
    canvas = av.VideoFrame(width, height, "yuv420p")
    left, top = (width - picture.width) // 4 * 2, (height - picture.height) // 4 * 2  # even: chroma aligned
    for index, fill in enumerate((black, 128, 128)):
        target, source = canvas.planes[index], picture.planes[index]
        shift = 0 if index == 0 else 1
        buffer = bytearray([fill]) * target.buffer_size
        rows = memoryview(source)
        x, y = left >> shift, top >> shift
        for row in range(source.height):
            start = (y + row) * target.line_size + x
            buffer[start:start + source.width] = rows[row * source.line_size:row * source.line_size + source.width]
        target.update(buffer)  # type: ignore[arg-type]  # PyAV's stub says bytes; any buffer will do, no copy
    return canvas
