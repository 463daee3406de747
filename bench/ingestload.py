"""The ingest benchmark's load: simulated cameras mailing a receiver, and vmond's WebSocket watched for the events.

A camera loops connect -> EHLO -> AUTH LOGIN -> MAIL -> RCPT -> DATA -> QUIT, one mail per connection as real
cameras do, back to back or paced. Each mail carries a unique token in its subject, so each ``event.created`` on
``/ws`` is matched to the mail it came from. :func:`run_load` warms a receiver up, runs the cameras, waits for
vmond's pipeline to catch up, and counts the receiver's CPU and RSS (proctree.py) over load and catch-up.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ingestmail import Template  # bench/ is the script's own folder
from ingestservers import IO_TIMEOUT, Server, camera_address
from proctree import rss_mb

TOKEN = re.compile(r"\[bench-[^\]\s]+\]")


@dataclass
class Sent:
    camera: int
    dot: float  # perf_counter when the final ".\r\n" was written
    accepted: float | None = None
    event: float | None = None
    event_id: int | None = None


@dataclass
class Load:
    """One run: a receiver, N cameras, the mails they sent, what the receiver did meanwhile."""

    label: str
    server: str
    cameras: int
    started: float = 0.0
    ended: float = 0.0
    drained: float = 0.0
    mails: dict[str, Sent] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    client_cpu: float = 0.0
    idle_rss: float = 0.0  # main process, after the warm-up, before the load
    fresh_rss: float = 0.0  # main process, right after start
    peak_rss: dict[str, float] = field(default_factory=dict)
    bytes_sent: int = 0
    clips_ready: set[int] = field(default_factory=set)  # event ids
    clips_skipped: set[int] = field(default_factory=set)
    clip_ready_at: dict[int, float] = field(default_factory=dict)  # event id -> its first video.state "ready"
    events_late: int = 0  # event.created that matched no mail of this run
    matched_by_order: int = 0  # event.created without the mail's token in its subject
    expected: int = 0  # mails the load is to send (a burst), 0 when it runs for a time

    def short(self) -> int:
        """Mails of a burst that were not accepted."""
        return max(0, self.expected - len(self.accepted()))

    def accepted(self) -> list[Sent]:
        return [m for m in self.mails.values() if m.accepted is not None]

    @property
    def rate(self) -> float:
        done = self.accepted()
        span = max((m.accepted for m in done), default=self.started) - self.started  # type: ignore[type-var]
        return len(done) / span if span > 0 else 0.0

    def accept_ms(self) -> list[float]:
        return [(m.accepted - m.dot) * 1000 for m in self.accepted()]  # type: ignore[operator]

    def e2e_ms(self) -> list[float]:
        return [(m.event - m.dot) * 1000 for m in self.accepted() if m.event is not None]

    def missing_events(self) -> int:
        return sum(1 for m in self.accepted() if m.event is None)

    def drain_s(self) -> float:
        """Seconds from the last 250 to the last ``event.created``; NaN while an event is missing."""
        done = self.accepted()
        if not done or self.missing_events():
            return float("nan")
        return max(m.event for m in done) - max(m.accepted for m in done)  # type: ignore[type-var, operator]

    def events_rate(self) -> float:
        """How fast the pipeline turned mails into events: events over the time from the load's start to the last."""
        events = [m.event for m in self.accepted() if m.event is not None]
        span = max(events, default=self.started) - self.started
        return len(events) / span if span > 0 else float("nan")

    def cpu_ms_per_mail(self, part: str | None = None) -> float:
        """CPU per accepted mail: of one part (main, workers; parser, encoder and other, the workers' split), or all."""
        count = len(self.accepted())
        if part == "other":  # fork server, resource tracker, and workers' last moments before they were replaced
            total = max(0.0, self.cpu.get("workers", 0.0) - self.cpu.get("parser", 0.0) - self.cpu.get("encoder", 0.0))
        elif part is None:
            total = self.cpu.get("main", 0.0) + self.cpu.get("workers", 0.0)
        else:
            total = self.cpu.get(part, 0.0)
        return total / count * 1000 if count else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]  # nearest rank


async def reply(reader: asyncio.StreamReader) -> bytes:
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), IO_TIMEOUT)
        if not line:
            raise ConnectionError("closed by the server: " + b"".join(lines).decode(errors="replace"))
        lines.append(line)
        if line[3:4] != b"-":
            return b"".join(lines)


async def expect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None, command: bytes | None,
                 code: bytes) -> bytes:
    if command is not None and writer is not None:
        writer.write(command + b"\r\n")
    answer = await reply(reader)
    if not answer.startswith(code):
        raise RuntimeError(f"{(command or b'greeting').decode()[:30]!r} -> {answer.decode(errors='replace')[:80]!r}")
    return answer


async def send_one(port: int, camera: int, mail: bytes, sent: Sent, load: Load) -> None:
    """One camera connection: connect, EHLO, AUTH LOGIN, MAIL, RCPT, DATA, QUIT."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), IO_TIMEOUT)
    writer.transport.set_write_buffer_limits(high=0)  # drain() returns once the kernel has every byte
    try:
        await expect(reader, None, None, b"220")
        await expect(reader, writer, f"EHLO cam{camera:03d}".encode(), b"250")
        await expect(reader, writer, b"AUTH LOGIN", b"334")
        await expect(reader, writer, base64.b64encode(f"cam{camera:03d}".encode()), b"334")
        await expect(reader, writer, base64.b64encode(b"secret"), b"235")
        await expect(reader, writer, b"MAIL FROM:<camera@cam.lan>", b"250")
        await expect(reader, writer, f"RCPT TO:<{camera_address(camera)}>".encode(), b"250")
        await expect(reader, writer, b"DATA", b"354")
        writer.write(mail)
        await asyncio.wait_for(writer.drain(), IO_TIMEOUT)
        sent.dot = time.perf_counter()
        writer.write(b".\r\n")
        answer = await reply(reader)
        if not answer.startswith(b"250"):
            raise RuntimeError(f"DATA -> {answer.decode(errors='replace')[:80]!r}")
        sent.accepted = time.perf_counter()
        load.bytes_sent += len(mail)
        await expect(reader, writer, b"QUIT", b"221")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), IO_TIMEOUT)


async def camera_loop(port: int, camera: int, templates: Sequence[Template], load: Load, deadline: float,
                      max_mails: int, tag: str, interval: float = 0.0) -> None:
    """One simulated camera: mail after mail, each on a new connection, until the deadline or *max_mails*; back to
    back, or one every *interval* seconds (from a random phase, so that the cameras do not send in step)."""
    start = time.perf_counter() + random.Random(camera).uniform(0, interval)
    for sequence in range(max_mails):
        if interval:
            await asyncio.sleep(max(0.0, start + sequence * interval - time.perf_counter()))
        if time.perf_counter() >= deadline:
            break
        template = templates[(camera + sequence) % len(templates)]
        token = f"[bench-{tag}-{camera}-{sequence}]"
        sent = Sent(camera, dot=0.0)
        load.mails[token] = sent
        try:
            await send_one(port, camera, template.mail(token), sent, load)
        except (TimeoutError, OSError, RuntimeError) as exc:
            load.errors.append(f"camera {camera}: {type(exc).__name__}: {exc}")
            del load.mails[token]
            await asyncio.sleep(0.2)  # then the next mail, as a camera retries


class Events:
    """vmond's /ws: event.created matched to the mail it came from (the token in its subject, else camera + order)."""

    def __init__(self) -> None:
        self.load: Load | None = None
        self.session: Any = None
        self.ws: Any = None
        self.task: asyncio.Task[None] | None = None

    async def connect(self, web_port: int, token: str) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession()
        self.ws = await asyncio.wait_for(self.session.ws_connect(
            f"ws://127.0.0.1:{web_port}/ws", headers={"Authorization": f"Bearer {token}"}, max_msg_size=0), IO_TIMEOUT)
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        import aiohttp

        async for message in self.ws:
            now = time.perf_counter()
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            self.on_message(json.loads(message.data), now)
        if self.load is not None:
            self.load.errors.append(f"the WebSocket closed (code {self.ws.close_code}): events missed")

    def on_message(self, message: dict[str, Any], now: float) -> None:
        load = self.load
        if load is None:
            return
        data = message.get("data") or {}
        if message.get("type") == "event.updated":
            if (data.get("video") or {}).get("state") == "ready":
                load.clips_ready.add(data["id"])
                load.clip_ready_at.setdefault(data["id"], now)
            if "clip_skipped" in (data.get("flags") or []):
                load.clips_skipped.add(data["id"])
            return
        if message.get("type") != "event.created":
            return
        match = TOKEN.search(data.get("subject") or "")
        sent = load.mails.get(match.group(0)) if match else None
        if sent is None:  # no token in the subject (a mail vmond could not parse): the camera's oldest open mail
            address = (data.get("camera") or {}).get("smtp_address", "")
            camera = int(address.split("@")[0].removeprefix("bench-cam") or -1) if address.startswith("bench") else -1
            sent = next((m for m in load.mails.values() if m.camera == camera and m.event is None and m.dot),
                        None)
            load.matched_by_order += sent is not None
        if sent is None or sent.event is not None:
            load.events_late += 1
            return
        sent.event, sent.event_id = now, data.get("id")

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.session is not None:
            await self.session.close()


async def run_load(server: Server, load: Load, templates: Sequence[Template], duration: float, max_mails: int,
                   events: Events | None, drain_timeout: float, interval: float = 0.0) -> Load:
    """Warm up, then *load.cameras* cameras for *duration* seconds; for vmond, wait until its pipeline has caught up
    (every accepted mail has its event, or *drain_timeout* passed). CPU and RSS over load and catch-up."""
    assert server.tree is not None and server.process is not None
    tree = server.tree
    # Warm-up (not measured): one mail of each kind, so the workers exist and the caches are warm.
    warm = Load("warm-up", server.name, 1)
    if events is not None:
        events.load = warm
    await camera_loop(server.smtp_port, 0, templates, warm, time.perf_counter() + 60, len(templates), "warm")
    warm.ended = time.perf_counter()
    await wait_for_events(warm, time.perf_counter() + 60 if events else 0)
    clips = sum(t.pictures >= 2 for t in templates) if getattr(server, "video", False) else 0
    while len(warm.clips_ready) < clips and time.perf_counter() < warm.ended + 60:  # their clips are not this load's
        await asyncio.sleep(0.05)
    load.errors.extend(f"warm-up: {e}" for e in warm.errors)
    await asyncio.sleep(0.5)
    load.fresh_rss = getattr(server, "idle_rss", 0.0)
    load.idle_rss = rss_mb(server.process.pid)
    load.peak_rss = {}
    if events is not None:
        events.load = load

    sampling = True

    async def sample() -> None:
        while sampling:
            for role, mb in tree.sample().items():
                load.peak_rss[role] = max(load.peak_rss.get(role, 0.0), mb)
            await asyncio.sleep(0.2)

    cpu_before, client_before = tree.cpu(), time.process_time()
    sampler = asyncio.create_task(sample())
    try:
        load.started = time.perf_counter()
        deadline = load.started + duration
        await asyncio.gather(*(camera_loop(server.smtp_port, camera, templates, load, deadline, max_mails, load.label,
                                           interval) for camera in range(load.cameras)))
        load.ended = time.perf_counter()
        if events is not None:
            await wait_for_events(load, time.perf_counter() + drain_timeout)
        load.drained = time.perf_counter()
        after = tree.cpu()
        load.cpu = {part: after[part] - cpu_before[part] for part in after}
        load.client_cpu = time.process_time() - client_before
    finally:
        sampling = False
        await sampler
    if events is not None:
        events.load = None
    return load


async def wait_for_events(load: Load, deadline: float) -> None:
    while load.missing_events() and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
