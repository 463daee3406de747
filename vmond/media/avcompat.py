"""What differs between the PyAV versions vmond runs on (Debian 12's 10.0 up to PyPI's 18), found by trying.

The one that matters is colour range. JPEG pixels are full range (0-255) and browsers show H.264 as limited
range (16-235): unconverted, blacks and whites are clipped. PyAV 10 converts for free (swscale treats the
``yuvj*`` formats the mjpeg decoder returns as full range), PyAV 18 only when told with ``dst_color_range``,
which PyAV 10 does not have (12 and 14 do both, as tried). Rather than trust version numbers, the method is
chosen by converting one tiny embedded JPEG and looking at the luma; a ``lutyuv`` filter is the fallback.
"""

from __future__ import annotations

import base64
import functools
import logging
from fractions import Fraction
from typing import Any, cast

import av
from av.video.reformatter import VideoReformatter

log = logging.getLogger(__name__)

# 16x16: black top half, white bottom half; block-aligned, so it decodes to exactly 0 and 255.
_CALIBRATION_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAIBAQEBAQIBAQECAgICAgQDAgICAgUEBAMEBgUGBgYFBgYGBwkIBgcJBwYGCAsICQoK"
    "CgoKBggLDAsKDAkKCgr/2wBDAQICAgICAgUDAwUKBwYHCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoK"
    "CgoKCgoKCgr/wAARCAAQABADASIAAhEBAxEB/8QAFQABAQAAAAAAAAAAAAAAAAAAAAr/xAAUEAEAAAAAAAAAAAAAAAAAAAAA/8QA"
    "FAEBAAAAAAAAAAAAAAAAAAAAAP/EABQRAQAAAAAAAAAAAAAAAAAAAAD/2gAMAwEAAhEDEQA/AJ/xf4A//9k="
)
_TO_LIMITED: dict[str, Any] = {"src_color_range": "JPEG", "dst_color_range": "MPEG"}
# The same mapping swscale applies, as a filter: Y 0-255 -> 16-235, chroma 0-255 -> 16-240 around 128.
LUT_TO_LIMITED = "y=16+val*219/255:u=128+(val-128)*224/255:v=128+(val-128)*224/255"


class _DropRangeWarning(logging.Filter):
    """PyAV 10 forwards FFmpeg's log to Python logging, and swscale warns on every ``yuvj*`` source that its
    range may be wrong; vmond converts the range on purpose (and checks it), so the warning is only noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "deprecated pixel format used" not in record.getMessage()


logging.getLogger("libav.swscaler").addFilter(_DropRangeWarning())


def clear_picture_type(frame: av.VideoFrame) -> None:
    """Let the encoder choose the frame type: the mjpeg decoder marks every frame an I-frame, and libx264
    obeys that (every frame a keyframe, 1.7 times the size). PyAV 10 takes the name, later versions an int;
    both take 0 (AV_PICTURE_TYPE_NONE)."""
    frame.pict_type = 0


def luma_extremes(frame: av.VideoFrame) -> tuple[int, int]:
    """The darkest and brightest luma sample, reading only the visible part of each row (not the padding)."""
    plane = frame.planes[0]
    view = memoryview(plane)
    low, high = 255, 0
    for row in range(plane.height):
        line = view[row * plane.line_size: row * plane.line_size + plane.width]
        low, high = min(low, min(line)), max(high, max(line))
    return low, high


def _is_limited(frame: av.VideoFrame) -> bool:
    low, high = luma_extremes(frame)
    return abs(low - 16) <= 2 and abs(high - 235) <= 2


@functools.cache
def range_method() -> tuple[str, dict[str, Any]]:
    """How this PyAV turns a decoded JPEG's full range into limited range: ``("swscale", kwargs)`` to pass to
    ``reformat`` (free: done while scaling), else ``("lut", {})`` for :class:`LutToLimited` after a plain
    ``reformat``. Found once per process by converting :data:`_CALIBRATION_JPEG` (microseconds)."""
    sample = av.CodecContext.create("mjpeg", "r").decode(av.Packet(_CALIBRATION_JPEG))[0]
    reformatter = VideoReformatter()
    for kwargs in (_TO_LIMITED, {}):
        try:
            frame = reformatter.reformat(sample, sample.width, sample.height, "yuv420p", **kwargs)
        except (TypeError, ValueError):  # PyAV 10 has no colour-range arguments
            continue
        if _is_limited(frame):
            return "swscale", dict(kwargs)
    frame = reformatter.reformat(sample, sample.width, sample.height, "yuv420p")
    frame.pts = 0
    if _is_limited(LutToLimited(frame.width, frame.height, Fraction(1, 1))(frame)):
        return "lut", {}
    # A clip with clipped blacks and whites beats no clip of an alarm; say so once per process.
    log.error("PyAV %s: no way found to convert JPEG full range to video range; clips will look harsh",
              av.__version__)
    return "none", {}


class LutToLimited:
    """Full -> limited range with an FFmpeg ``lutyuv`` filter graph, for a PyAV whose swscale cannot (8-14 ms
    per 1080p frame, so only the fallback). One graph per clip: every frame has the clip's size."""

    def __init__(self, width: int, height: int, time_base: Fraction) -> None:
        self._graph = av.filter.Graph()
        # PyAV's stub asks for a VideoFormat; PyAV itself takes the format's name too (it calls VideoFormat(format)).
        self._source = self._graph.add_buffer(width=width, height=height, format="yuv420p",  # type: ignore[arg-type]
                                              time_base=time_base)
        lut = self._graph.add("lutyuv", LUT_TO_LIMITED)
        self._sink = self._graph.add("buffersink")
        self._source.link_to(lut)
        lut.link_to(self._sink)
        self._graph.configure()

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        self._source.push(frame)
        return cast(av.VideoFrame, self._sink.pull())  # a video graph gives video frames
