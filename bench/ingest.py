"""Benchmark: SMTP ingest under load, vmond against a bare asyncio receiver (see bench/README.md).

Simulated cameras mail a receiver the way real ones do, one mail per connection (ingestload.py); the mails are the
samples in ``tests/data/camera-mail/`` and generated camera mails (ingestmail.py: noisy 1080p JPEGs, base64 in
76-column CRLF lines), each with a unique token in its subject. The receivers (ingestservers.py) are vmond (``vmond
run`` in a subprocess, watched over ``/ws``) and a bare asyncio reference that fsyncs each mail and answers 250.

The parts, each optional:

* back to back: 1, 8 and 32 cameras, each sending its next mail as soon as the last got its 250, for a few seconds;
  the reference, then vmond;
* burst: 8 cameras x 12 generated mails, each camera its mails in a row, video off, the reference then vmond,
  repeated: the drain time (last ``event.created`` - last 250, nothing missing), the pipeline's events/s, the
  accept p99 against the reference's, CPU per mail split by process (main, parser and encoder workers);
* paced: 8 cameras, one mail a second each: the end-to-end latency of an alarm rather than of a queue;
* clips: 8 cameras each sending a 3-picture mail a second, ``video.enabled`` false and true in turns: the accept
  latency while clips encode;
* clip: one camera's 5 x 1080p mail, video on: 250 -> clip ready, against the ffmpeg CLI (ingestclip.py).

Measured besides: accept latency (final ``.\\r\\n`` -> 250), CPU seconds per mail over the process tree (counted
until the pipeline has caught up), RSS by process (proctree.py). Tables and targets: ingestreport.py. Every loop is
bounded in time and count; subprocesses and scratch folders are removed on failure, Ctrl-C and SIGTERM too.

    .venv/bin/python bench/ingest.py [--burst-only | --clip-only] [--cameras 1,8,32] [--dir DIR] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ingestclip import ClipTimes, clip_run  # bench/ is the script's own folder
from ingestload import Events, Load, run_load
from ingestmail import Template, generated_jpegs, generated_mail, sample_templates
from ingestreport import Results, describe, print_tables, print_targets, targets
from ingestservers import ROOT, Reference, Server, Vmond, make_data_template, reference_server

sys.path.insert(0, str(ROOT))  # vmond itself, from a checkout without installing

BURST_TIME_LIMIT = 300.0  # seconds a burst's cameras may take to send it, at most


@dataclass
class Bench:
    args: argparse.Namespace
    scratch: Path
    data_template: Path
    cameras: int  # camera addresses in every vmond's configuration
    servers: list[Server] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def running_vmond(self, label: str, video: bool) -> AsyncIterator[tuple[Vmond, Events]]:
        folder = self.scratch / f"vmond-{label}"
        folder.mkdir()
        server = Vmond(folder, self.data_template, self.cameras, video, self.args.video_encoder)
        self.servers.append(server)
        events = Events()
        try:
            await asyncio.to_thread(server.start)
            await events.connect(server.web_port, server.token)
            yield server, events
        except Exception:
            log = folder / "vmond.log"
            tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
            print("vmond failed; the end of its log:", *tail, sep="\n  ", file=sys.stderr)
            raise
        finally:
            await events.close()
            await asyncio.to_thread(server.stop)
            shutil.rmtree(folder, ignore_errors=True)  # gigabytes of media after a long run

    async def vmond(self, load: Load, templates: Sequence[Template], video: bool, interval: float = 0.0,
                    duration: float | None = None, max_mails: int | None = None, catch_up: bool = True) -> Load:
        async with self.running_vmond(load.label, video) as (server, events):
            return await run_load(server, load, templates, duration or self.args.duration,
                                  max_mails or self.args.max_mails, events,
                                  self.args.drain_timeout if catch_up else 0.0, interval)

    async def reference(self, load: Load, templates: Sequence[Template], duration: float | None = None,
                        max_mails: int | None = None) -> Load:
        folder = self.scratch / f"reference-{load.label}"
        server = Reference(folder)
        self.servers.append(server)
        try:
            await asyncio.to_thread(server.start)
            return await run_load(server, load, templates, duration or self.args.duration,
                                  max_mails or self.args.max_mails, None, 0)
        finally:
            await asyncio.to_thread(server.stop)
            shutil.rmtree(folder, ignore_errors=True)

    async def burst(self, run: int, templates: Sequence[Template]) -> tuple[Load, Load]:
        """One burst to the reference, then to vmond: each camera its mails in a row, as fast as they are taken."""
        cameras, mails = self.args.burst_cameras, self.args.burst_mails
        loads = []
        for server in ("reference", "vmond"):
            load = Load(f"burst-{run}", server, cameras, expected=cameras * mails)
            if server == "vmond":
                load = await self.vmond(load, templates, video=False, duration=BURST_TIME_LIMIT, max_mails=mails)
            else:
                load = await self.reference(load, templates, duration=BURST_TIME_LIMIT, max_mails=mails)
            print(describe(load), flush=True)
            loads.append(load)
        return loads[1], loads[0]

    async def clip(self, jpegs: Sequence[bytes]) -> ClipTimes:
        async with self.running_vmond("clip", video=True) as (server, events):
            return await clip_run(server, events, jpegs, self.scratch / "clip-frames", self.args.clip_repeat)

    def stop_all(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop()


async def bench(args: argparse.Namespace, scratch: Path) -> int:
    print("generating mails ...", flush=True)
    generated = [Template.of(f"generated-{seed}", generated_mail(seed, size=args.picture_size), 3)
                 for seed in range(1, 4)] if (args.cameras or args.burst_repeat or args.paced_cameras
                                              or args.clips_cameras) else []
    mixed = [mail for pair in zip(generated * 2, sample_templates(), strict=False) for mail in pair]
    if args.cameras or args.paced_cameras:
        print(f"mix: {', '.join(f'{t.name} ({t.size // 1000} kB)' for t in mixed)}")
    print(flush=True)
    cameras = max([1, *args.cameras, args.burst_cameras, args.paced_cameras, args.clips_cameras])
    data_template = await asyncio.to_thread(make_data_template, scratch / "template", cameras)
    run = Bench(args, scratch, data_template, cameras)
    results = Results([], None, None, [], None)
    try:
        for count in args.cameras:
            ref = await run.reference(Load(f"n{count}", "reference", count), mixed)
            print(describe(ref), flush=True)
            mine = await run.vmond(Load(f"n{count}", "vmond", count), mixed, video=False)
            print(describe(mine), flush=True)
            results.pairs.append((mine, ref))
        for turn in range(1, args.burst_repeat + 1):
            results.bursts.append(await run.burst(turn, generated))
        if args.paced_cameras:
            results.paced = await run.vmond(Load("paced", "vmond", args.paced_cameras), mixed, video=False,
                                            interval=args.paced_interval, duration=args.paced_duration)
            print(describe(results.paced), flush=True)
        if args.clips_cameras:
            results.clips = ([], [])
            for turn in range(1, args.clips_repeat + 1):
                for video in (False, True):
                    load = Load(f"clips-{'on' if video else 'off'}-{turn}", "vmond", args.clips_cameras)
                    load = await run.vmond(load, generated, video=video, duration=args.clips_duration,
                                           catch_up=False, interval=args.clips_interval)
                    print(describe(load), flush=True)
                    results.clips[video].append(load)
        if args.clip_repeat:
            jpegs = await asyncio.to_thread(generated_jpegs, 7, args.clip_pictures, args.picture_size)
            results.clip = await run.clip(jpegs)
            print(f"clip: {len(results.clip.vmond_ms)} of vmond, {len(results.clip.cli_ms)} of the CLI, "
                  f"{len(results.clip.errors)} error(s)", flush=True)
    finally:
        run.stop_all()
    print()
    print_tables(args, results)
    print()
    print_targets(targets(args, results))
    return 0


def picture_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    only = parser.add_argument_group("parts (by default all of them run)")
    only.add_argument("--burst-only", action="store_true", help="run the burst (and with --clip-only the clip) only")
    only.add_argument("--clip-only", action="store_true", help="run the clip (and with --burst-only the burst) only")
    parser.add_argument("--cameras", default="1,8,32", help="simulated cameras of the back-to-back runs, "
                        "comma-separated (0: skip them)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of back-to-back load per run (3)")
    parser.add_argument("--max-mails", type=int, default=2000, help="at most this many mails per camera and run")
    parser.add_argument("--drain-timeout", type=float, default=60.0,
                        help="seconds to wait after the load for vmond's pipeline to catch up (60)")
    parser.add_argument("--burst-cameras", type=int, default=8, help="cameras of the burst (8)")
    parser.add_argument("--burst-mails", type=int, default=12, help="mails each camera sends in the burst (12)")
    parser.add_argument("--burst-repeat", type=int, default=3, help="bursts, each to the reference and to a fresh "
                        "vmond (3; 0: skip them)")
    parser.add_argument("--paced-cameras", type=int, default=8, help="cameras of the paced run (0: skip it)")
    parser.add_argument("--paced-interval", type=float, default=1.0, help="seconds between a paced camera's mails")
    parser.add_argument("--paced-duration", type=float, default=10.0, help="seconds of the paced run (10)")
    parser.add_argument("--clips-cameras", type=int, default=8, help="cameras of the clips comparison (0: skip it)")
    parser.add_argument("--clips-duration", type=float, default=20.0, help="seconds of each clips run (20)")
    parser.add_argument("--clips-interval", type=float, default=1.0,
                        help="seconds between a camera's mails in the clips runs (1; 0: back to back)")
    parser.add_argument("--clips-repeat", type=int, default=2, help="runs without and with clips, alternating (2)")
    parser.add_argument("--clip-pictures", type=int, default=5, help="JPEGs in the clip run's mail (5)")
    parser.add_argument("--clip-repeat", type=int, default=5, help="clips timed, each against the ffmpeg CLI "
                        "(5; 0: skip the clip run)")
    parser.add_argument("--video-encoder", default="auto", choices=["auto", "libx264", "h264_v4l2m2m"],
                        help="vmond's video.encoder in the runs with video on (auto)")
    parser.add_argument("--picture-size", type=picture_size, default=(1920, 1080), metavar="WxH",
                        help="size of the generated JPEGs (1920x1080)")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one; put it on "
                        "the disk vmond's data directory would use, since both servers fsync)")
    parser.add_argument("--reference-server", nargs=2, metavar=("PORT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.cameras = [n for n in (int(n) for n in args.cameras.split(",")) if n > 0]
    if args.burst_only or args.clip_only:
        args.cameras, args.paced_cameras, args.clips_cameras = [], 0, 0
        args.burst_repeat = args.burst_repeat if args.burst_only else 0
        args.clip_repeat = args.clip_repeat if args.clip_only else 0
    if args.burst_repeat and (args.burst_cameras < 1 or args.burst_mails < 1):
        parser.error("--burst-cameras and --burst-mails must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.reference_server:
        port, directory = args.reference_server
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(reference_server(int(port), Path(directory)))
        return 0
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C: every subprocess and scratch folder is cleaned up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs ({platform.machine()}, "
          f"load {os.getloadavg()[0]:.1f}); back to back {args.duration:g} s per run with cameras {args.cameras}; "
          f"burst {args.burst_cameras} x {args.burst_mails} x {args.burst_repeat} runs; paced {args.paced_cameras}; "
          f"clips comparison {args.clips_cameras}; clip {args.clip_pictures} pictures x {args.clip_repeat}")
    with tempfile.TemporaryDirectory(prefix="vmond-bench-", dir=args.dir) as scratch:
        try:
            return asyncio.run(bench(args, Path(scratch)))
        except KeyboardInterrupt:
            print("interrupted; cleaning up", file=sys.stderr)
            return 130
        finally:
            print(f"\n(load average {os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    sys.exit(main())
