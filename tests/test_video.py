"""Alarm clips from JPEG bursts (vmond.media.video) and vetting camera videos (vmond.media.videoprobe).

The clips are checked by opening them again: with PyAV, and by reading the MP4 boxes and the H.264 sequence
header directly, so the checks mean the same on Debian's PyAV 10 and PyPI's PyAV 18.
"""

from __future__ import annotations

import io
import os
import struct
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import pytest
from PIL import Image, ImageDraw

from vmond.media import avcompat, video
from vmond.media.clipwork import encode_files
from vmond.media.video import ClipError, ClipInfo, encode_clip
from vmond.media.videoprobe import VideoRejected, probe_video
from vmond.util import fsutil

# --- making inputs -----------------------------------------------------------------------------------------


def snapshot_jpeg(width: int = 320, height: int = 240, colour: tuple[int, int, int] | None = None,
                  index: int = 0) -> bytes:
    """A camera-ish snapshot (texture, a moving box, text), or a flat *colour*."""
    if colour is not None:
        image = Image.new("RGB", (width, height), colour)
    else:
        noise = Image.effect_noise((width, height), 40).convert("RGB")
        image = Image.blend(Image.new("RGB", (width, height), (90, 120, 150)), noise, 0.3)
        draw = ImageDraw.Draw(image)
        x = (index * 17) % max(1, width - 40)
        draw.rectangle([(x, height // 3), (x + 40, height // 3 + 40)], fill=(220, 200, 180))
        draw.text((4, 4), f"CAM {index}", fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def burst(count: int, width: int = 320, height: int = 240) -> list[bytes]:
    return [snapshot_jpeg(width, height, index=index) for index in range(count)]


def encode(tmp_path: Path, frames: list[bytes], **kwargs: object) -> tuple[Path, ClipInfo]:
    out = tmp_path / "clip.mp4"
    options: dict = {"fps": 2.0, "max_width": 1280, "encoder": "libx264", **kwargs}
    return out, encode_clip(frames, out, **options)


# --- reading outputs -------------------------------------------------------------------------------------------


def top_level_boxes(path: Path) -> list[str]:
    data = path.read_bytes()
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8:offset + 16])[0]
        boxes.append(kind.decode("latin-1"))
        if size < 8:
            break
        offset += size
    return boxes


def decoded_frames(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return [frame.reformat(format="yuv420p") for frame in container.decode(video=0)]


def luma(frame: av.VideoFrame, x: int, y: int) -> int:
    plane = frame.planes[0]
    return memoryview(plane)[y * plane.line_size + x]


class _Bits:
    """Just enough of an H.264 bit reader for a sequence parameter set (Exp-Golomb codes)."""

    def __init__(self, rbsp: bytes) -> None:
        self.bits = "".join(f"{byte:08b}" for byte in rbsp)
        self.pos = 0

    def u(self, n: int) -> int:
        value = int(self.bits[self.pos:self.pos + n], 2)
        self.pos += n
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bits[self.pos] == "0":
            zeros += 1
            self.pos += 1
        return self.u(zeros + 1) - 1

    def se(self) -> int:
        value = self.ue()
        return (value + 1) // 2 if value % 2 else -(value // 2)


def sps_video_signal(path: Path) -> tuple[int, int] | None:
    """(video_full_range_flag, matrix_coefficients) from the clip's H.264 SPS, None if it signals nothing."""
    data = path.read_bytes()
    avcc = data.index(b"avcC") + 4
    length = struct.unpack(">H", data[avcc + 6:avcc + 8])[0]
    nal = data[avcc + 8:avcc + 8 + length]
    rbsp = nal[1:].replace(b"\x00\x00\x03", b"\x00\x00")  # emulation prevention bytes
    bits = _Bits(rbsp)
    profile = bits.u(8)
    bits.u(16)  # constraint flags, level
    bits.ue()  # seq_parameter_set_id
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        if bits.ue() == 3:  # chroma_format_idc
            bits.u(1)
        bits.ue(), bits.ue(), bits.u(1)  # bit depths, qpprime_y_zero_transform_bypass
        assert bits.u(1) == 0, "x264 writes no scaling matrices by default"
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()
    elif poc_type == 1:
        bits.u(1), bits.se(), bits.se()
        for _ in range(bits.ue()):
            bits.se()
    bits.ue(), bits.u(1), bits.ue(), bits.ue()  # refs, gaps, width, height in macroblocks
    if bits.u(1) == 0:  # frame_mbs_only_flag
        bits.u(1)
    bits.u(1)  # direct_8x8_inference
    if bits.u(1):  # frame_cropping
        bits.ue(), bits.ue(), bits.ue(), bits.ue()
    if not bits.u(1):  # vui_parameters_present
        return None
    if bits.u(1) and bits.u(8) == 255:  # aspect_ratio_info: extended SAR
        bits.u(32)
    if bits.u(1):  # overscan_info_present
        bits.u(1)
    if not bits.u(1):  # video_signal_type_present
        return None
    bits.u(3)  # video_format
    full_range = bits.u(1)
    matrix = 2  # unspecified
    if bits.u(1):  # colour_description_present
        bits.u(8), bits.u(8)
        matrix = bits.u(8)
    return full_range, matrix


@pytest.fixture(autouse=True)
def _no_hardware_memory() -> Iterator[None]:
    """Each test starts without the per-process memory of failed encoders."""
    video._failed_encoders.clear()
    yield
    video._failed_encoders.clear()


# --- encode_clip -----------------------------------------------------------------------------------------------


def test_clip_is_browser_ready_h264(tmp_path: Path) -> None:
    out, info = encode(tmp_path, burst(6))
    assert info == ClipInfo(320, 240, 6, 0, out.stat().st_size, "libx264", 3.0)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.codec_context.width, stream.codec_context.height) == (320, 240)
        assert stream.frames == 6
        if hasattr(stream.codec_context, "color_range"):  # PyAV >= 11 shows the tag; 10 has no attribute
            assert int(stream.codec_context.color_range) == 1  # AVCOL_RANGE_MPEG, "tv"
        keyframes = [packet.is_keyframe for packet in container.demux(stream) if packet.size]
    assert len(keyframes) == 6
    assert keyframes[0] and not all(keyframes), "JPEG keyframe flags must not force every frame to an I-frame"
    assert len(decoded_frames(out)) == 6


def test_clip_says_limited_range_and_bt601_in_the_bitstream(tmp_path: Path) -> None:
    out, _ = encode(tmp_path, burst(2))
    # What ffprobe reports as color_range=tv, color_space=smpte170m; read from the SPS, so PyAV 10 checks it too.
    assert sps_video_signal(out) == (0, 6)


def test_black_and_white_land_inside_video_range(tmp_path: Path) -> None:
    out, _ = encode(tmp_path, [snapshot_jpeg(colour=(0, 0, 0)), snapshot_jpeg(colour=(255, 255, 255))] * 2)
    black, white = decoded_frames(out)[:2]
    black_low, black_high = avcompat.luma_extremes(black)
    white_low, white_high = avcompat.luma_extremes(white)
    assert 16 <= black_low <= black_high <= 20, "black must be 16 (unconverted JPEG black would be 0)"
    assert 231 <= white_low <= white_high <= 235, "white must be 235 (unconverted JPEG white would be 255)"


def test_moov_comes_before_mdat(tmp_path: Path) -> None:
    out, _ = encode(tmp_path, burst(3))
    boxes = top_level_boxes(out)
    assert boxes[0] == "ftyp"
    assert boxes.index("moov") < boxes.index("mdat"), boxes


def test_odd_size_becomes_even_and_no_wider_than_max_width(tmp_path: Path) -> None:
    _, info = encode(tmp_path, burst(3, 333, 199), max_width=201)
    assert info.width <= 201 and info.width % 2 == 0 and info.height % 2 == 0
    assert (info.width, info.height) == (200, 120)
    _, info = encode(tmp_path, burst(3, 333, 199))
    assert (info.width, info.height) == (332, 198)  # never upscaled, only made even


def test_large_frames_are_scaled_down(tmp_path: Path) -> None:
    out, info = encode(tmp_path, burst(2, 1920, 1080), max_width=640)
    assert (info.width, info.height) == (640, 360)
    assert all((frame.width, frame.height) == (640, 360) for frame in decoded_frames(out))


def test_frames_of_another_size_are_letterboxed(tmp_path: Path) -> None:
    white = (255, 255, 255)
    frames = [snapshot_jpeg(width, height, white) for width, height in ((320, 240), (640, 240), (160, 240), (640, 480))]
    out, info = encode(tmp_path, frames)
    assert (info.width, info.height, info.frames) == (320, 240, 4)
    first, wide, narrow, same_aspect = decoded_frames(out)
    assert all((f.width, f.height) == (320, 240) for f in (first, wide, narrow, same_aspect))
    assert luma(first, 160, 5) > 220 and luma(same_aspect, 160, 5) > 220  # no bars
    # 640x240 fits as 320x120: bars above and below.
    assert luma(wide, 160, 10) < 30 and luma(wide, 160, 120) > 220 and luma(wide, 160, 230) < 30
    # 160x240 fits as is: bars left and right.
    assert luma(narrow, 10, 120) < 30 and luma(narrow, 160, 120) > 220 and luma(narrow, 310, 120) < 30
    assert 14 <= luma(wide, 160, 10), "the bars are video black (16), not below it"


def test_frames_keep_their_order_when_decoded_in_parallel(tmp_path: Path) -> None:
    # Large and small JPEGs alternate, so the decoder threads finish them out of order; the clip may not.
    greys = list(range(20, 240, 25))
    frames = [snapshot_jpeg(*((1280, 960) if index % 2 else (320, 240)), colour=(grey, grey, grey))
              for index, grey in enumerate(greys)]
    out, info = encode(tmp_path, frames)
    assert (info.width, info.height, info.frames) == (320, 240, len(greys))
    centres = [luma(frame, 160, 120) for frame in decoded_frames(out)]
    assert centres == sorted(centres) and centres[-1] - centres[0] > 150, centres


def test_corrupt_jpegs_are_skipped_and_counted(tmp_path: Path) -> None:
    good = burst(3)
    frames = [good[0], b"not a jpeg", good[1][: len(good[1]) // 2], good[1], b"", good[2]]
    out, info = encode(tmp_path, frames)
    assert (info.frames, info.skipped) == (3, 3)
    assert len(decoded_frames(out)) == 3


@pytest.mark.parametrize("frames", [[], [b"junk", b"more junk"], "one good"])
def test_fewer_than_two_good_frames_is_a_clip_error(tmp_path: Path, frames: object) -> None:
    frames = [snapshot_jpeg(), b"junk"] if frames == "one good" else frames
    with pytest.raises(ClipError, match="at least 2"):
        encode(tmp_path, frames)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == [], "neither the clip nor a temporary file may be left"


def test_a_failed_write_leaves_no_clip_and_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(fsutil, "fsync_file", failing_fsync)
    with pytest.raises(OSError, match="I/O error"):
        encode(tmp_path, burst(2))
    assert list(tmp_path.iterdir()) == []


def test_the_daemons_encode_leaves_the_directory_fsync_to_the_install(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = fsutil.fsync_file
    monkeypatch.setattr(fsutil, "fsync_file", lambda fd: (synced.append("file"), real_fsync(fd)))
    monkeypatch.setattr(fsutil, "fsync_directory", lambda path: synced.append("directory"))
    encode(tmp_path, burst(2))
    assert synced == ["file", "directory"]  # on its own, encode_clip makes the clip's name durable too
    synced.clear()
    pictures = []
    for index, data in enumerate(burst(2)):
        pictures.append(tmp_path / f"{index}.jpg")
        pictures[-1].write_bytes(data)
    made = encode_files(pictures, tmp_path / "staged.new", 2.0, 1280, "libx264", "ultrafast")
    # The media store renames the staged file into place and fsyncs the directory then (install_sync).
    assert synced == ["file"] and made.info.frames == 2


def test_an_existing_clip_is_replaced_whole(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"old")
    out, info = encode(tmp_path, burst(2))
    assert out.stat().st_size == info.bytes > 3
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_fps_sets_duration_and_timestamps(tmp_path: Path) -> None:
    out, info = encode(tmp_path, burst(3), fps=0.5)
    assert info.duration == 6.0
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        times = [float(frame.pts * frame.time_base) for frame in container.decode(stream)]
    assert times == pytest.approx([0.0, 2.0, 4.0], abs=0.01)


@pytest.mark.skipif(video.hardware_encoder_present(), reason="this machine has a V4L2 H.264 encoder")
def test_auto_uses_libx264_without_an_encoder_device(tmp_path: Path) -> None:
    _, info = encode(tmp_path, burst(2), encoder="auto")
    assert info.encoder == "libx264"


@pytest.mark.skipif(video.hardware_encoder_present(), reason="this machine has a V4L2 H.264 encoder")
def test_hardware_encoder_without_device_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out, info = encode(tmp_path, burst(3), encoder="h264_v4l2m2m")
    assert info.encoder == "libx264" and info.frames == 3
    assert len(decoded_frames(out)) == 3
    if "h264_v4l2m2m" in av.codecs_available:  # tried, failed, remembered
        assert "h264_v4l2m2m failed" in caplog.text
        assert "h264_v4l2m2m" in video._failed_encoders
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    for kwargs in ({"fps": 0}, {"fps": float("nan")}, {"max_width": 1}, {"encoder": "vp9"}):
        with pytest.raises(ValueError):
            encode(tmp_path, burst(2), **kwargs)


def test_range_conversion_method_and_lut_fallback() -> None:
    method, _ = avcompat.range_method()
    assert method == "swscale", "PyAV 10 to 18 all convert in swscale; the lut is for a version that cannot"
    frame = av.VideoFrame(16, 16, "yuv420p")  # full-range black and white, as a plain reformat would give
    for plane, fill in zip(frame.planes, (0, 128, 128), strict=True):
        plane.update(bytes([fill]) * plane.buffer_size)
    memoryview(frame.planes[0])[0:8] = b"\xff" * 8
    frame.pts = 0
    assert avcompat.luma_extremes(avcompat.LutToLimited(16, 16, Fraction(1, 2))(frame)) == (16, 235)


# --- probe_video -----------------------------------------------------------------------------------------------


@pytest.fixture
def small_mp4(tmp_path: Path) -> Path:
    out = tmp_path / "camera.mp4"
    encode_clip(burst(4), out, fps=2.0, max_width=1280, encoder="libx264")
    return out


def test_probe_accepts_a_small_mp4(small_mp4: Path) -> None:
    info = probe_video(small_mp4)
    assert (info.codec, info.width, info.height, info.pix_fmt) == ("h264", 320, 240, "yuv420p")
    assert info.duration == pytest.approx(2.0, abs=0.1)
    assert info.browser_playable


def write_mjpeg_mov(path: Path) -> None:
    """Two 64x48 MJPEG frames in a QuickTime file: a valid video no browser plays."""
    with av.open(str(path), "w", format="mov") as container:
        stream = container.add_stream("mjpeg", rate=Fraction(2))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        for index in range(2):
            frame = av.VideoFrame(64, 48, "yuvj420p")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_probe_says_mjpeg_is_not_browser_playable(tmp_path: Path) -> None:
    path = tmp_path / "mjpeg.mp4"
    write_mjpeg_mov(path)
    info = probe_video(path)
    assert (info.codec, info.width, info.height, info.browser_playable) == ("mjpeg", 64, 48, False)


def _rejected(path: Path, **kwargs: object) -> str:
    started = time.monotonic()
    with pytest.raises(VideoRejected) as caught:
        probe_video(path, **kwargs)  # type: ignore[arg-type]
    assert time.monotonic() - started < 2.0, "hostile input must not make the probe slow"
    return str(caught.value)


def test_probe_rejects_garbage_and_empty_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(100_000))
    reason = _rejected(garbage)
    assert "not a readable MP4" in reason and str(tmp_path) not in reason
    empty = tmp_path / "empty.mp4"
    empty.touch()
    assert "empty" in _rejected(empty)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(16))
    _rejected(truncated)


def test_probe_never_follows_a_playlist(tmp_path: Path) -> None:
    playlist = tmp_path / "playlist.mp4"
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n")
    assert "not a readable MP4" in _rejected(playlist)


def test_probe_rejects_a_huge_picture(tmp_path: Path) -> None:
    path = tmp_path / "dci4k.mp4"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(2))
        stream.width, stream.height, stream.pix_fmt = 4096, 2160, "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast"}
        for index in range(2):
            frame = av.VideoFrame(4096, 2160, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert "4096x2160 is more than 8294400 pixels" in _rejected(path)


def test_probe_rejects_a_header_that_claims_a_huge_picture(tmp_path: Path) -> None:
    """An MJPEG track whose sample description and JPEG header both claim 4000x4000 over a few bytes of data."""
    path = tmp_path / "claim.mov"
    write_mjpeg_mov(path)
    data = bytearray(path.read_bytes())
    entry = data.index(b"stsd") + 12  # past the box type, version/flags and entry count
    data[entry + 32:entry + 36] = struct.pack(">HH", 4000, 4000)  # the visual sample entry's width, height
    start = 0
    while (start := data.find(b"\xff\xc0", start + 1)) > 0:  # every JPEG's SOF0: height, width
        data[start + 5:start + 9] = struct.pack(">HH", 4000, 4000)
    path.write_bytes(bytes(data))
    assert "4000x4000 is more than" in _rejected(path)


def test_probe_rejects_too_long_or_too_large_for_the_limits(small_mp4: Path) -> None:
    assert "duration" in _rejected(small_mp4, max_seconds=1)
    assert "pixels" in _rejected(small_mp4, max_pixels=320 * 240 - 1)
