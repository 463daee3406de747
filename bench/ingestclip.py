"""The clip run: how soon after its 250 a camera's burst is on the wall as a video, against the ffmpeg CLI.

One camera mails N 1080p JPEGs in one mail to a vmond with video on; measured is the time from the 250 to the
``event.updated`` whose ``video.state`` is ``ready`` on ``/ws``. The same frames, written to files beforehand, are
encoded by the ffmpeg CLI alone (``-preset ultrafast``, vmond's ``video.fps`` and ``video.max_width``), its wall
time including its start. The two take turns, a warm-up of each is not counted, and the medians are compared.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ingestload import Events, Load, Sent, send_one  # bench/ is the script's own folder
from ingestmail import Template, camera_mail
from ingestservers import CLIP_FPS, CLIP_MAX_WIDTH, Vmond

CLIP_TIMEOUT = 60.0  # seconds from the 250 to the clip, at most
SETTLE = 0.5  # seconds of quiet between two measurements


@dataclass
class ClipTimes:
    pictures: int
    vmond_ms: list[float] = field(default_factory=list)
    cli_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def vmond(self) -> float:
        return statistics.median(self.vmond_ms) if self.vmond_ms else float("nan")

    @property
    def cli(self) -> float:
        return statistics.median(self.cli_ms) if self.cli_ms else float("nan")


def ffmpeg_command(folder: Path, out: Path) -> list[str]:
    return ["ffmpeg", "-nostdin", "-v", "error", "-y", "-framerate", f"{CLIP_FPS:g}", "-i", str(folder / "%d.jpg"),
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-vf", f"scale={CLIP_MAX_WIDTH}:-2",
            str(out)]


def time_cli(folder: Path) -> float:
    """Milliseconds the ffmpeg CLI takes to encode the frames in *folder*, start to exit."""
    started = time.perf_counter()
    subprocess.run(ffmpeg_command(folder, folder / "cli.mp4"), check=True, timeout=CLIP_TIMEOUT)
    return (time.perf_counter() - started) * 1000


async def time_vmond(server: Vmond, events: Events, template: Template, token: str) -> float:
    """Milliseconds from the 250 of one mail to its clip's ``video.state`` ``ready``."""
    load = Load(token, "vmond", 1)
    sent = Sent(0, dot=0.0)
    load.mails[token] = sent
    events.load = load
    try:
        await send_one(server.smtp_port, 0, template.mail(token), sent, load)
        assert sent.accepted is not None
        deadline = sent.accepted + CLIP_TIMEOUT
        while time.perf_counter() < deadline:
            if sent.event_id is not None and sent.event_id in load.clip_ready_at:
                return (load.clip_ready_at[sent.event_id] - sent.accepted) * 1000
            if sent.event_id is not None and sent.event_id in load.clips_skipped:
                raise RuntimeError(f"vmond skipped the clip of event {sent.event_id}")
            await asyncio.sleep(0.005)
        raise RuntimeError(f"no clip within {CLIP_TIMEOUT:g} s of the 250 (event {sent.event_id})")
    finally:
        events.load = None


async def clip_run(server: Vmond, events: Events, jpegs: Sequence[bytes], folder: Path, repeat: int) -> ClipTimes:
    """*repeat* turns of vmond and the CLI on the same frames (the CLI only when ``ffmpeg`` is on PATH)."""
    template = Template.of("clip", camera_mail(99, jpegs), len(jpegs))
    folder.mkdir(parents=True, exist_ok=True)
    for index, data in enumerate(jpegs, 1):
        (folder / f"{index}.jpg").write_bytes(data)
    have_cli = shutil.which("ffmpeg") is not None
    times = ClipTimes(len(jpegs))
    if not have_cli:
        times.errors.append("no ffmpeg on PATH: the CLI's time is missing")
    for turn in range(repeat + 1):  # turn 0 warms both up
        runs = ["vmond", "cli"] if turn % 2 else ["cli", "vmond"]
        for which in runs:
            try:
                if which == "cli" and have_cli:
                    value = await asyncio.to_thread(time_cli, folder)
                elif which == "vmond":
                    value = await time_vmond(server, events, template, f"[bench-clip-{turn}]")
                else:
                    continue
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                times.errors.append(f"{which}, turn {turn}: {type(exc).__name__}: {exc}")
                continue
            if turn:
                (times.vmond_ms if which == "vmond" else times.cli_ms).append(value)
            await asyncio.sleep(SETTLE)
    return times
