"""Benchmark: alarm clips and thumbnails, vmond against the obvious alternatives (see bench/README.md).

For each burst (5 and 10 camera-like JPEGs, 1080p and 720p, quality 85) it times, in this one process:

* vmond: ``vmond.media.video.encode_clip`` (temporary file, letterbox check, range conversion, faststart, fsync);
* ffmpeg CLI: ``ffmpeg -framerate 2 -i %d.jpg -c:v libx264 -preset P -pix_fmt yuv420p -vf scale=W:H
  -movflags +faststart`` at the same preset and size (JPEGs written to disk beforehand, not timed);
* lower bound: decode + convert + encode in PyAV and nothing else (no letterbox, range or fsync work);

and thumbnails: ``vmond.media.images.inspect_image`` against a plain ``Image.open().load()`` + ``thumbnail()``.
Medians of N runs, wall and CPU seconds per event (CPU includes every thread, and the CLI's child process).

    .venv/bin/python bench/encode.py [--repeat 7] [--preset veryfast] [--encoder libx264|h264_v4l2m2m]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from scenes import camera_jpegs  # noqa: E402  (bench/ is the script's own folder)

from vmond.media import video  # noqa: E402
from vmond.media.images import THUMBNAIL_SIZE, inspect_image  # noqa: E402

FPS = 2
SOURCES = {"1080p": (1920, 1080), "720p": (1280, 720)}
TARGET_VS_CLI = 0.45
TARGET_VS_LOWER = 1.1
TARGET_THUMBNAIL = 0.55


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float


def measure(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, Timing]:
    """Median wall and CPU seconds of each run; the runs take turns, so a noisy neighbour hurts all alike."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for run in runs.values():
        run()  # warm-up: imports, page cache, the range calibration
    for turn in range(repeat):
        names = list(runs)
        names = names[turn % len(names):] + names[:turn % len(names)]
        for name in names:
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu, wall = time.process_time(), time.perf_counter()
            runs[name]()
            wall = time.perf_counter() - wall
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            child_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
            samples[name].append((wall, time.process_time() - cpu + child_cpu))
    return {name: Timing(statistics.median(w for w, _ in values), statistics.median(c for _, c in values))
            for name, values in samples.items()}


def lower_bound(jpegs: Sequence[bytes], out: Path, width: int, height: int, encoder: str, preset: str) -> None:
    """Decode, convert, encode: the least any PyAV program does for the same clip (PyAV's default threading)."""
    decoder = av.CodecContext.create("mjpeg", "r")
    with av.open(str(out), "w", format="mp4") as container:
        stream = container.add_stream(encoder, rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if encoder == video.SOFTWARE:
            stream.codec_context.options = {"preset": preset, "crf": video.CRF}
        for index, data in enumerate(jpegs):
            frame = decoder.decode(av.Packet(data))[0].reformat(width, height, "yuv420p")
            frame.pict_type = 0  # else every frame is an I-frame: not the same clip
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def ffmpeg_cli(folder: Path, out: Path, width: int, height: int, encoder: str, preset: str, bitrate: int) -> None:
    codec = ["-c:v", encoder] + (["-preset", preset] if encoder == video.SOFTWARE else ["-b:v", str(bitrate)])
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-framerate", str(FPS), "-i", str(folder / "%d.jpg"), *codec,
         "-pix_fmt", "yuv420p", "-vf", f"scale={width}:{height}", "-movflags", "+faststart", str(out)],
        check=True)


def thumbnails_vmond(jpegs: Sequence[bytes]) -> None:
    for data in jpegs:
        inspect_image(data)


def thumbnails_plain(jpegs: Sequence[bytes]) -> None:
    for data in jpegs:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            image.thumbnail(THUMBNAIL_SIZE)
            image.convert("RGB").save(io.BytesIO(), "JPEG", quality=75)


def thumbnails_draft_to_size(jpegs: Sequence[bytes]) -> None:
    """For reference, a possible images.py change: draft to the thumbnail's own (aspect-correct) size, so
    libjpeg decodes 1080p at 1/4 and 720p at 1/2 scale (inspect_image drafts to 480x480, which allows only 1/2
    for 1080p and nothing for 720p)."""
    for data in jpegs:
        with Image.open(io.BytesIO(data)) as image:
            scale = min(THUMBNAIL_SIZE[0] / image.width, THUMBNAIL_SIZE[1] / image.height, 1.0)
            image.draft("RGB", (round(image.width * scale), round(image.height * scale)))
            image.load()
            image.thumbnail(THUMBNAIL_SIZE)
            image.convert("RGB").save(io.BytesIO(), "JPEG", quality=75)


def ratio(a: float, b: float, target: float | None = None) -> str:
    text = f"{a / b:.2f}" if b else "-"
    if target is not None and b:
        text += " ok" if a / b <= target else " MISS"
    return text


def bench_burst(args: argparse.Namespace, folder: Path, source: str, count: int, have_cli: bool) -> tuple:
    src_width, src_height = SOURCES[source]
    jpegs = camera_jpegs(count, src_width, src_height)
    for stale in folder.glob("*.jpg"):
        stale.unlink()
    for index, data in enumerate(jpegs, 1):
        (folder / f"{index}.jpg").write_bytes(data)
    width, height = video.fit_even(src_width, src_height, args.max_width)
    bitrate = max(200_000, int(width * height * FPS * video.HARDWARE_BITS_PER_PIXEL))
    out = folder / "clip.mp4"
    runs: dict[str, Callable[[], object]] = {
        "vmond": lambda: video.encode_clip(jpegs, out, fps=FPS, max_width=args.max_width, encoder=args.encoder,
                                           preset=args.preset),
        "lower": lambda: lower_bound(jpegs, folder / "lower.mp4", width, height, args.encoder, args.preset),
    }
    if have_cli:
        runs["cli"] = lambda: ffmpeg_cli(folder, folder / "cli.mp4", width, height, args.encoder, args.preset,
                                         bitrate)
    encodes = measure(runs, args.repeat)
    thumbs = measure({"vmond": lambda: thumbnails_vmond(jpegs), "plain": lambda: thumbnails_plain(jpegs),
                      "draft": lambda: thumbnails_draft_to_size(jpegs)}, args.repeat)
    sizes = {name: (folder / f"{name}.mp4").stat().st_size // 1024 for name in ("clip", "lower", "cli")
             if (folder / f"{name}.mp4").exists()}
    jpeg_kb = sum(map(len, jpegs)) // count // 1024
    return f"{count} x {source} -> {width}x{height}", jpeg_kb, sizes, encodes, thumbs


def print_tables(rows: list[tuple]) -> None:
    print("| burst | JPEG kB | clip kB vmond / CLI | vmond wall / cpu | ffmpeg CLI wall / cpu | lower bound wall / cpu "
          f"| vmond/CLI wall, cpu (<= {TARGET_VS_CLI}) | vmond/lower wall, cpu (<= {TARGET_VS_LOWER}) |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for label, jpeg_kb, sizes, encodes, _ in rows:
        mine, lower, cli = encodes["vmond"], encodes["lower"], encodes.get("cli")
        cli_text = f"{cli.wall:.3f} / {cli.cpu:.3f}" if cli else "-"
        vs_cli = (f"{ratio(mine.wall, cli.wall, TARGET_VS_CLI)}, {ratio(mine.cpu, cli.cpu, TARGET_VS_CLI)}"
                  if cli else "-")
        print(f"| {label} | {jpeg_kb} | {sizes.get('clip', '-')} / {sizes.get('cli', '-')} "
              f"| {mine.wall:.3f} / {mine.cpu:.3f} | {cli_text} | {lower.wall:.3f} / {lower.cpu:.3f} | {vs_cli} "
              f"| {ratio(mine.wall, lower.wall, TARGET_VS_LOWER)}, {ratio(mine.cpu, lower.cpu, TARGET_VS_LOWER)} |")
    print()
    print(f"| thumbnails | vmond inspect_image wall / cpu | plain load + thumbnail wall / cpu "
          f"| vmond/plain wall, cpu (<= {TARGET_THUMBNAIL}) | draft to thumbnail size wall / cpu | its ratio |")
    print("|---|--:|--:|--:|--:|--:|")
    for label, _, _, _, thumbs in rows:
        mine, plain, draft = thumbs["vmond"], thumbs["plain"], thumbs["draft"]
        print(f"| {label.split(' ->')[0]} | {mine.wall:.3f} / {mine.cpu:.3f} | {plain.wall:.3f} / {plain.cpu:.3f} "
              f"| {ratio(mine.wall, plain.wall, TARGET_THUMBNAIL)}, {ratio(mine.cpu, plain.cpu, TARGET_THUMBNAIL)} "
              f"| {draft.wall:.3f} / {draft.cpu:.3f} | {ratio(draft.cpu, plain.cpu, TARGET_THUMBNAIL)} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per measurement (median reported)")
    parser.add_argument("--preset", default=video.DEFAULT_PRESET, help="x264 preset for all three encoders")
    parser.add_argument("--encoder", default=video.SOFTWARE, choices=[video.SOFTWARE, video.HARDWARE])
    parser.add_argument("--max-width", type=int, default=1280, help="vmond's video.max_width (default 1280)")
    parser.add_argument("--frames", default="5,10", help="burst lengths, comma-separated")
    parser.add_argument("--sources", default=",".join(SOURCES), help="JPEG sizes, comma-separated")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    have_cli = shutil.which("ffmpeg") is not None
    libavcodec = ".".join(map(str, av.library_versions["libavcodec"]))
    load = os.getloadavg()[0]
    print(f"Python {platform.python_version()}, PyAV {av.__version__} (libavcodec {libavcodec}), "
          f"{os.cpu_count()} CPUs ({platform.machine()}, load {load:.1f}); encoder {args.encoder}, "
          f"preset {args.preset}, max_width {args.max_width}, {FPS} fps; "
          f"median of {args.repeat}, seconds per event")
    print(f"range conversion: {video.avcompat.range_method()[0]}" + ("" if have_cli else "; no ffmpeg CLI found"))
    print()
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        rows = [bench_burst(args, Path(scratch), source, int(count), have_cli)
                for source in args.sources.split(",") for count in args.frames.split(",")]
    print_tables(rows)
    print(f"\n(load average {os.getloadavg()[0]:.1f} at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
