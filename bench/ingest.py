"""Benchmark: SMTP ingest under load, vmond against a bare asyncio receiver (see bench/README.md).

N simulated cameras (default 1, 8 and 32 at once) each loop connect -> EHLO -> AUTH LOGIN -> MAIL -> RCPT -> DATA
-> QUIT, one mail per connection as real cameras do, for a fixed time. The mails are the samples in
``tests/data/camera-mail/`` and generated camera mails (3 noisy 1080p JPEGs of about 260 kB, base64 in 76-column
CRLF lines), each with a unique token in its subject. Two receivers get the same load, one after the other:

* vmond: ``vmond run`` in a subprocess on a temporary configuration (ports from the READY notification, one
  account with a camera address per simulated camera, ``events.coalesce_window: 0s``), watched over ``/ws``;
* reference: ``bench/ingest.py --reference-server PORT DIR``, a bare asyncio server that answers the dialogue
  minimally, reads DATA with one ``readuntil(b"\\r\\n.\\r\\n")``, writes it to a file, fsyncs file and directory
  in a thread and answers 250: the least any receiver that keeps its promise does.

Measured: mails/s; accept latency (final ``.\\r\\n`` sent -> 250 received); vmond's end-to-end latency (final
``.\\r\\n`` -> ``event.created`` for that mail on the WebSocket); server CPU seconds per mail over the process tree
(vmond's main process and its parser/encoder workers separately, counted until the pipeline has caught up); RSS
(main process idle before the load and peak during it; each worker role's peak). Then 8 cameras paced at one mail
a second each (the end-to-end latency when the pipeline can keep up), and 8 cameras each sending a 3-picture mail a
second, ``video.enabled`` false and true in turns: the accept latency while clips encode (paced, because a mail
backlog makes vmond hold its clips back). Every loop is bounded in time and
count; subprocesses and scratch folders are removed on failure, Ctrl-C and SIGTERM too.

    .venv/bin/python bench/ingest.py [--cameras 1,8,32] [--duration 3] [--paced-cameras 8] [--clips-cameras 8]
                                     [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import platform
import random
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scenes import camera_jpegs  # bench/ is the script's own folder

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

MAIL_DIR = ROOT / "tests" / "data" / "camera-mail"
DOMAIN = "monitor.local"
PASSWORD = "bench password 1"
TOKEN = re.compile(r"\[bench-[^\]\s]+\]")
JPEG_SIZE = (1920, 1080)
JPEG_QUALITY = 82  # about 260 kB with the sensor noise below
IO_TIMEOUT = 30.0  # any single SMTP reply, WebSocket read or process start
REFERENCE_READ_LIMIT = 64 << 20

# Targets from the issue.
TARGET_THROUGHPUT = 0.5  # vmond mails/s >= 0.5 x the reference's, 8 cameras
TARGET_ACCEPT_P99 = 2.0  # vmond accept p99 <= 2 x the reference's, 8 cameras
TARGET_E2E_P50_MS = 100.0
TARGET_E2E_P99_MS = 500.0
TARGET_CLIPS = 1.2  # accept p99 while clips encode <= 1.2 x without
TARGET_RSS_IDLE_MB = 80.0
TARGET_RSS_LOAD_MB = 150.0


# ---------------------------------------------------------------------------------------------------------------
# The reference receiver (its own process: ``bench/ingest.py --reference-server PORT DIR``)


async def reference_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, directory: Path,
                            counter: Iterator[int]) -> None:
    def store(data: bytes, name: str) -> None:
        path = directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    writer.write(b"220 reference ESMTP\r\n")
    try:
        while True:
            line = await reader.readuntil(b"\r\n")
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(b"250-reference\r\n250-AUTH LOGIN PLAIN\r\n250 8BITMIME\r\n")
            elif verb == b"AUTH":
                if line.split()[1:2] == [b"LOGIN"] and len(line.split()) == 2:
                    writer.write(b"334 VXNlcm5hbWU6\r\n")
                    await reader.readuntil(b"\r\n")
                    writer.write(b"334 UGFzc3dvcmQ6\r\n")
                    await reader.readuntil(b"\r\n")
                writer.write(b"235 ok\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                data = await reader.readuntil(b"\r\n.\r\n")
                await asyncio.to_thread(store, data, f"{next(counter):08d}.msg")
                writer.write(b"250 ok\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:  # MAIL, RCPT, RSET, NOOP
                writer.write(b"250 ok\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


async def reference_server(port: int, directory: Path) -> None:
    counter = iter(range(1 << 62))
    server = await asyncio.start_server(lambda r, w: reference_session(r, w, directory, counter), "127.0.0.1", port,
                                        limit=REFERENCE_READ_LIMIT, backlog=128)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stop.wait()


# ---------------------------------------------------------------------------------------------------------------
# Mails


def generated_mail(seed: int) -> bytes:
    """A Hikvision-like alarm mail: a text part and three JPEG attachments, base64 in 76-column CRLF lines."""
    boundary = f"----=_bench_{seed:04d}"
    parts = [
        "From: camera@cam.lan\r\nTo: alarm@monitor.local\r\nSubject: Motion Detection on Channel 1\r\n"
        "Date: Wed, 01 May 2024 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        "EVENT TYPE: Motion Detection\r\nEVENT TIME: 2024-05-01,12:00:00\r\nCHANNEL NAME: Camera 01\r\n\r\n"
    ]
    for index, jpeg in enumerate(camera_jpegs(3, *JPEG_SIZE, seed=seed, quality=JPEG_QUALITY), 1):
        encoded = base64.encodebytes(jpeg).replace(b"\n", b"\r\n").decode()
        parts.append(f'--{boundary}\r\nContent-Type: image/jpeg; name="ch01-{index}.jpg"\r\n'
                     f'Content-Disposition: attachment; filename="ch01-{index}.jpg"\r\n'
                     f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}")
    parts.append(f"--{boundary}--\r\n")
    return "".join(parts).encode()


@dataclass(frozen=True)
class Template:
    """A mail split at the end of its Subject line, dot-stuffed, so that a token costs a concatenation."""

    name: str
    head: bytes
    tail: bytes  # ends with CRLF; the final ".\r\n" is sent on its own (it starts the latency clock)
    pictures: int

    @classmethod
    def of(cls, name: str, raw: bytes, pictures: int) -> Template:
        match = re.search(rb"^Subject:[^\r\n]*", raw, re.MULTILINE | re.IGNORECASE)
        assert match, name
        head, tail = raw[:match.end()], raw[match.end():]  # the tail starts with the Subject's line end
        # Dot-stuffing after CRLF only, as RFC 5321 has it (and as cameras sending bare LF do).
        head = (b"\r\n" + head).replace(b"\r\n.", b"\r\n..")[2:]
        tail = tail.replace(b"\r\n.", b"\r\n..")
        if not tail.endswith(b"\r\n"):
            tail += b"\r\n"
        return cls(name, head, tail, pictures)

    def mail(self, token: str) -> bytes:
        return self.head + f" {token}".encode() + self.tail

    @property
    def size(self) -> int:
        return len(self.head) + len(self.tail)


def sample_templates() -> list[Template]:
    expected = json.loads((MAIL_DIR / "expected.json").read_text())
    return [Template.of(path.stem, path.read_bytes(), expected.get(path.name, {}).get("images", 0))
            for path in sorted(MAIL_DIR.glob("*.eml"))]


# ---------------------------------------------------------------------------------------------------------------
# Process tree accounting from /proc


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on


def descendants(root: int) -> dict[int, int]:
    """Every process below *root*: pid -> parent pid."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = {}, [root]
    while todo:
        parent = todo.pop()
        for child in children.get(parent, []):
            found[child] = parent
            todo.append(child)
    return found


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own utime + stime, reaped children's cutime + cstime) of *pid*, every thread included."""
    fields = _stat(pid)
    if fields is None:
        return 0.0, 0.0
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def address_space_limit(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max address space"):
                soft = line.split()[3]
                return None if soft == "unlimited" else int(soft)
    except OSError:
        pass
    return None


def unit_environment() -> dict[str, str]:
    """The Environment= lines of systemd/vmond.service: vmond is measured the way the appliance runs it."""
    found: dict[str, str] = {}
    unit = ROOT / "systemd" / "vmond.service"
    for line in unit.read_text().splitlines() if unit.is_file() else ():
        if line.startswith("Environment="):
            found.update(item.split("=", 1) for item in line.split("=", 1)[1].split())
    return found


UNIT_ENVIRONMENT = unit_environment()


class ProcessTree:
    """A server process and everything it started: vmond's fork server, its parser and encoder workers."""

    def __init__(self, pid: int) -> None:
        from vmond.daemon import ENCODER_MEMORY, PARSER_MEMORY

        self.pid = pid
        self._roles = {PARSER_MEMORY: "parser", ENCODER_MEMORY: "encoder"}
        self.seen: dict[int, str] = {}  # every descendant seen: pid -> its start time (a reused pid is not ours)

    def _see(self, pid: int) -> None:
        if pid not in self.seen and (fields := _stat(pid)) is not None:
            self.seen[pid] = fields[19]

    def role(self, pid: int, parent: int) -> str:
        """main; forkserver and tracker (multiprocessing's, the main process's children); parser and encoder
        (workers, told apart by their address-space limits); "starting" (a worker not yet limited)."""
        if pid == self.pid:
            return "main"
        if parent == self.pid:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                cmdline = b""
            return ("forkserver" if b"forkserver" in cmdline else "tracker" if b"resource_tracker" in cmdline
                    else "other")
        return self._roles.get(address_space_limit(pid) or 0, "starting")

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far: the main process's own, and the workers' (every other live process of the tree, and
        those that exited, through their parents' counts of reaped children)."""
        own, reaped = cpu_seconds(self.pid)
        workers = reaped
        for pid in descendants(self.pid):
            self._see(pid)
            child_own, child_reaped = cpu_seconds(pid)
            workers += child_own + child_reaped
        return {"main": own, "workers": workers}

    def rss(self) -> dict[str, float]:
        """RSS in MB by role (see :meth:`role`)."""
        out = {"main": rss_mb(self.pid)}
        for pid, parent in descendants(self.pid).items():
            self._see(pid)
            role = self.role(pid, parent)
            out[role] = out.get(role, 0.0) + rss_mb(pid)
        return out


# ---------------------------------------------------------------------------------------------------------------
# The servers under test


class Notifications:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def wait_for(self, prefix: str, process: subprocess.Popen[bytes], timeout: float = IO_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.2)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"vmond exited with {process.returncode} before {prefix}")
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            if message.startswith(prefix) or f"\n{prefix}" in message:
                return message
        raise RuntimeError(f"no {prefix} from vmond within {timeout} s")

    def close(self) -> None:
        self.sock.close()


class Server:
    """A receiver in a subprocess: its SMTP port, and how to stop it (and whatever it started) for sure."""

    name = "?"

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.tree: ProcessTree | None = None
        self.smtp_port = 0

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if self.tree is not None:
            for pid in descendants(process.pid):
                self.tree._see(pid)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        for pid, started in (self.tree.seen if self.tree else {}).items():
            # Workers left behind by a daemon that had to be killed: only processes it started (same start time).
            fields = _stat(pid)
            if fields is not None and fields[19] == started and fields[0] != "Z":
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


class Reference(Server):
    name = "reference"

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen([sys.executable, __file__, "--reference-server", "0", str(self.directory)],
                                        stdout=subprocess.PIPE)
        self.tree = ProcessTree(self.process.pid)
        assert self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], IO_TIMEOUT)
        line = self.process.stdout.readline().decode() if readable else ""
        if not line.startswith("READY "):
            raise RuntimeError(f"reference server did not start: {line!r}")
        self.smtp_port = int(line.split()[1])


class Vmond(Server):
    name = "vmond"

    def __init__(self, folder: Path, template: Path, cameras: int, video: bool) -> None:
        super().__init__()
        self.folder = folder
        self.web_port = 0
        self.token = ""
        self.idle_rss = 0.0  # main process, right after READY
        data = folder / "data"
        shutil.copytree(template, data)  # the database with the bench's user, made once
        self.video = video
        self.config = write_vmond_config(folder, data, cameras, video)
        self.notify = Notifications(folder / "notify.sock")

    def start(self) -> None:
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path), "PYTHONPATH": str(ROOT), **UNIT_ENVIRONMENT}
        with (self.folder / "vmond.log").open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "vmond", "run", "--config", str(self.config)],
                                            env=env, stdout=log, stderr=subprocess.STDOUT)
        self.tree = ProcessTree(self.process.pid)
        ready = self.notify.wait_for("READY=1", self.process)
        ports = re.search(r"SMTP on port (\d+), dashboard on port (\d+)", ready)
        assert ports, ready
        self.smtp_port, self.web_port = int(ports.group(1)), int(ports.group(2))
        self.token = self._token()
        time.sleep(1.0)
        self.idle_rss = rss_mb(self.process.pid)

    def _token(self) -> str:
        request = urllib.request.Request(f"http://127.0.0.1:{self.web_port}/api/token", method="POST",
                                         data=json.dumps({"username": "bench", "password": PASSWORD}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=IO_TIMEOUT) as response:
            return json.loads(response.read())["access_token"]

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.notify.close()


def camera_address(index: int) -> str:
    return f"bench-cam{index:03d}@{DOMAIN}"


def vmond_config(data: Path, cameras: int, video: bool) -> dict[str, Any]:
    return {
        "site": {"id": "bench", "name": "Ingest benchmark"},
        "storage": {"data_dir": str(data), "min_free_space": 0},
        "smtp": {"listen": "127.0.0.1:0", "domain": DOMAIN, "auth": "accept-any", "max_connections": cameras + 8},
        "web": {"listen": "127.0.0.1:0"},
        "events": {"coalesce_window": "0s"},
        "video": {"enabled": video},
        "accounts": [{"name": "Bench", "cameras": [
            {"name": f"Camera {index}", "smtp_address": camera_address(index).split("@")[0]}
            for index in range(cameras)]}],
    }


def write_vmond_config(folder: Path, data: Path, cameras: int, video: bool) -> Path:
    path = folder / "vmond.yaml"
    path.write_text(json.dumps(vmond_config(data, cameras, video), indent=1))  # JSON is YAML
    return path


def make_data_template(folder: Path, cameras: int) -> Path:
    """A data directory with the bench's admin user, copied for every vmond run (hashing a password once)."""
    folder.mkdir()
    data = folder / "data"
    config = write_vmond_config(folder, data, cameras, False)
    subprocess.run([sys.executable, "-m", "vmond", "user", "add", "bench", "--role", "admin", "--password-stdin",
                    "--config", str(config)], input=f"{PASSWORD}\n".encode(), check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    return data


# ---------------------------------------------------------------------------------------------------------------
# The load


@dataclass
class Sent:
    camera: int
    dot: float  # perf_counter when the final ".\r\n" was written
    accepted: float | None = None
    event: float | None = None


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
    events_late: int = 0  # event.created that matched no mail of this run
    matched_by_order: int = 0  # event.created without the mail's token in its subject

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

    def cpu_ms_per_mail(self, part: str | None = None) -> float:
        count = len(self.accepted())
        total = sum(self.cpu.values()) if part is None else self.cpu.get(part, 0.0)
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
        sent.event = now

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
            for role, mb in tree.rss().items():
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


# ---------------------------------------------------------------------------------------------------------------
# Runs and tables


@dataclass
class Bench:
    args: argparse.Namespace
    scratch: Path
    data_template: Path
    servers: list[Server] = field(default_factory=list)

    async def vmond(self, label: str, cameras: int, templates: Sequence[Template], video: bool,
                    interval: float = 0.0, duration: float | None = None, catch_up: bool = True) -> Load:
        folder = self.scratch / f"vmond-{label}"
        folder.mkdir()
        server = Vmond(folder, self.data_template, max(self.args.cameras), video)
        self.servers.append(server)
        events = Events()
        try:
            await asyncio.to_thread(server.start)
            await events.connect(server.web_port, server.token)
            load = await run_load(server, Load(label, "vmond", cameras), templates, duration or self.args.duration,
                                  self.args.max_mails, events, self.args.drain_timeout if catch_up else 0.0,
                                  interval)
        except Exception:
            log = folder / "vmond.log"
            tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
            print("vmond failed; the end of its log:", *tail, sep="\n  ", file=sys.stderr)
            raise
        finally:
            await events.close()
            await asyncio.to_thread(server.stop)
            shutil.rmtree(folder, ignore_errors=True)  # gigabytes of media after a long run
        return load

    async def reference(self, label: str, cameras: int, templates: Sequence[Template]) -> Load:
        folder = self.scratch / f"reference-{label}"
        server = Reference(folder)
        self.servers.append(server)
        try:
            await asyncio.to_thread(server.start)
            load = await run_load(server, Load(label, "reference", cameras), templates, self.args.duration,
                                  self.args.max_mails, None, 0)
        finally:
            await asyncio.to_thread(server.stop)
            shutil.rmtree(folder, ignore_errors=True)
        return load

    def stop_all(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop()


def ms(value: float) -> str:
    return "-" if value != value else f"{value:.0f}" if value >= 100 else f"{value:.1f}"  # NaN -> "-"


def div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def describe(load: Load) -> str:
    accepted = load.accepted()
    text = (f"{load.server} {load.label}: {len(accepted)} mails in {load.ended - load.started:.1f} s, "
            f"{load.bytes_sent / max(1, len(accepted)) / 1e3:.0f} kB average, {len(load.errors)} error(s)")
    if load.server == "vmond" and load.drained - load.ended < 0.01:
        text += f", {len(load.e2e_ms())} event.created during the load (no catch-up wait)"
    elif load.server == "vmond":
        text += (f", {len(load.e2e_ms())} event.created within {load.drained - load.ended:.1f} s of catch-up"
                 f" ({load.missing_events()} missing, {load.matched_by_order} matched by camera and order)")
    if load.events_late:
        text += f", {load.events_late} event.created matched no mail"
    return text + (f"; first error: {load.errors[0]}" if load.errors else "")


def events_rate(load: Load) -> float:
    """How fast the pipeline turned mails into events: events over the time from the load's start to the last one."""
    last = max((m.event for m in load.accepted() if m.event is not None), default=load.started)
    return div(len(load.e2e_ms()), last - load.started)


def p(values: Sequence[float]) -> str:
    return f"{ms(percentile(values, 50))} / {ms(percentile(values, 99))}"


def print_tables(args: argparse.Namespace, pairs: list[tuple[Load, Load]], paced: Load | None,
                 clips: tuple[list[Load], list[Load]] | None) -> dict[str, tuple[bool, str]]:
    environment = " ".join(f"{key}={value}" for key, value in UNIT_ENVIRONMENT.items())
    print(f"vmond runs with the service unit's environment: {environment}")
    print()
    print(f"Back to back: each camera sends its next mail as soon as the last one is done, for {args.duration:g} s "
          "(vmond's end-to-end latency then measures how far its pipeline falls behind its SMTP door)")
    print()
    print("| cameras | vmond mails/s | reference mails/s | vmond/ref throughput | vmond accept p50 / p99 ms "
          "| reference accept p50 / p99 ms | vmond/ref accept p99 | vmond end-to-end p50 / p99 ms "
          "| vmond events/s |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for mine, ref in pairs:
        accept, ref_accept = mine.accept_ms(), ref.accept_ms()
        print(f"| {mine.cameras} | {mine.rate:.1f} | {ref.rate:.1f} | {div(mine.rate, ref.rate):.2f} | {p(accept)} "
              f"| {p(ref_accept)} | {div(percentile(accept, 99), percentile(ref_accept, 99)):.2f} "
              f"| {p(mine.e2e_ms())} | {events_rate(mine):.1f} |")
    print()
    print("| cameras | vmond CPU ms/mail: main + workers | reference CPU ms/mail | bench client CPU ms/mail "
          "| vmond main RSS MB: fresh / idle / peak | parser worker RSS peak MB | fork server RSS peak MB "
          "| reference RSS peak MB |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|")
    for mine, ref in pairs:
        print(f"| {mine.cameras} | {mine.cpu_ms_per_mail('main'):.1f} + {mine.cpu_ms_per_mail('workers'):.1f} "
              f"= {mine.cpu_ms_per_mail():.1f} | {ref.cpu_ms_per_mail():.1f} "
              f"| {div(mine.client_cpu, len(mine.accepted())) * 1000:.1f} "
              f"| {mine.fresh_rss:.0f} / {mine.idle_rss:.0f} / {mine.peak_rss.get('main', 0):.0f} "
              f"| {mine.peak_rss.get('parser', 0):.0f} | {mine.peak_rss.get('forkserver', 0):.0f} "
              f"| {ref.peak_rss.get('main', 0):.0f} |")
    if paced is not None:
        print()
        print(f"Paced: {paced.cameras} cameras, each one mail every {args.paced_interval:g} s for "
              f"{args.paced_duration:g} s (a storm of alarms the pipeline can keep up with)")
        print()
        print("| cameras | vmond mails/s | accept p50 / p99 ms | end-to-end p50 / p99 ms | end-to-end max ms |")
        print("|--:|--:|--:|--:|--:|")
        e2e = paced.e2e_ms()
        print(f"| {paced.cameras} | {div(len(paced.accepted()), paced.ended - paced.started):.1f} "
              f"| {p(paced.accept_ms())} | {p(e2e)} | {ms(max(e2e, default=float('nan')))} |")
    if clips is not None:
        print()
        pace = (f"each one mail every {args.clips_interval:g} s" if args.clips_interval else "back to back "
                "(a backlog: vmond holds its clips back until the pipeline has caught up)")
        print(f"Clips: {args.clips_cameras} cameras, {pace}, 3-picture mails only, {args.clips_duration:g} s per "
              "run, runs alternating (accept latency only: no catch-up wait)")
        print()
        print("| video.enabled | run | mails/s | accept p50 / p99 ms | clips made / skipped during the load "
              "| CPU cores busy during the load: main + workers | encoder worker RSS peak MB |")
        print("|---|--:|--:|--:|--:|--:|--:|")
        for video, loads in zip(("false", "true"), clips, strict=True):
            for load in loads:
                span = load.drained - load.started
                print(f"| {video} | {load.label.rsplit('-', 1)[1]} | {load.rate:.1f} | {p(load.accept_ms())} "
                      f"| {len(load.clips_ready)} / {len(load.clips_skipped)} "
                      f"| {div(load.cpu.get('main', 0), span):.2f} + "
                      f"{div(load.cpu.get('workers', 0), span):.2f} | {load.peak_rss.get('encoder', 0):.0f} |")
            pooled = [value for load in loads for value in load.accept_ms()]
            print(f"| {video} | all | {statistics.mean(load.rate for load in loads):.1f} | {p(pooled)} "
                  f"| {sum(len(load.clips_ready) for load in loads)} / "
                  f"{sum(len(load.clips_skipped) for load in loads)} | | |")

    results: dict[str, tuple[bool, str]] = {}
    by_cameras = {mine.cameras: (mine, ref) for mine, ref in pairs}
    if 8 in by_cameras:
        mine, ref = by_cameras[8]
        throughput = div(mine.rate, ref.rate)
        p99, ref_p99 = percentile(mine.accept_ms(), 99), percentile(ref.accept_ms(), 99)
        results["throughput >= 0.5 x the reference's, 8 cameras"] = (
            throughput >= TARGET_THROUGHPUT, f"{mine.rate:.1f} vs {ref.rate:.1f} mails/s = {throughput:.2f} x")
        results["accept p99 <= 2 x the reference's, 8 cameras"] = (
            p99 <= TARGET_ACCEPT_P99 * ref_p99, f"{ms(p99)} vs {ms(ref_p99)} ms = {div(p99, ref_p99):.2f} x")
        results.update(e2e_targets(mine, "8 cameras back to back"))
    if paced is not None:
        results.update(e2e_targets(paced, f"{paced.cameras} cameras paced"))
    if clips is not None:
        base, p99 = (percentile([value for load in loads for value in load.accept_ms()], 99) for loads in clips)
        results[f"accept p99 while clips encode <= 1.2 x without, {args.clips_cameras} cameras"] = (
            p99 <= TARGET_CLIPS * base, f"{ms(p99)} vs {ms(base)} ms = {div(p99, base):.2f} x")
    runs = [mine for mine, _ in pairs] + ([paced] if paced else []) + [load for loads in clips or () for load in loads]
    idle = max(run.idle_rss for run in runs)
    results["main process RSS idle <= 80 MB"] = (
        idle <= TARGET_RSS_IDLE_MB, f"{idle:.0f} MB after the warm-up mails, "
        f"{max(run.fresh_rss for run in runs):.0f} MB right after start")
    if 32 in by_cameras:
        mine = by_cameras[32][0]
        peak = mine.peak_rss.get("main", 0.0)
        results["main process RSS <= 150 MB under 32 cameras"] = (
            peak <= TARGET_RSS_LOAD_MB, f"{peak:.0f} MB (parser worker {mine.peak_rss.get('parser', 0):.0f} MB, "
            f"fork server {mine.peak_rss.get('forkserver', 0):.0f} MB)")
    if clips is not None:
        results["(encoder worker RSS peak, reported separately)"] = (
            True, f"{max(load.peak_rss.get('encoder', 0) for load in clips[1]):.0f} MB while encoding")
    return results


def e2e_targets(load: Load, label: str) -> dict[str, tuple[bool, str]]:
    e2e, missing = load.e2e_ms(), load.missing_events()
    note = f", {missing} of {len(load.accepted())} events still missing" if missing else ""
    return {
        f"end-to-end p50 <= 100 ms, {label}": (not missing and percentile(e2e, 50) <= TARGET_E2E_P50_MS,
                                               f"{ms(percentile(e2e, 50))} ms{note}"),
        f"end-to-end p99 <= 500 ms, {label}": (not missing and percentile(e2e, 99) <= TARGET_E2E_P99_MS,
                                               f"{ms(percentile(e2e, 99))} ms{note}"),
    }


async def bench(args: argparse.Namespace, scratch: Path) -> int:
    print("generating mails ...", flush=True)
    generated = [Template.of(f"generated-{seed}", generated_mail(seed), 3) for seed in range(1, 4)]
    samples = sample_templates()
    mixed = [mail for pair in zip(generated * 2, samples, strict=False) for mail in pair]
    print(f"mix: {', '.join(f'{t.name} ({t.size // 1000} kB)' for t in mixed)}")
    print(flush=True)
    data_template = await asyncio.to_thread(make_data_template, scratch / "template", max(args.cameras))
    run = Bench(args, scratch, data_template)
    try:
        pairs = []
        for cameras in args.cameras:
            ref = await run.reference(f"n{cameras}", cameras, mixed)
            print(describe(ref), flush=True)
            mine = await run.vmond(f"n{cameras}", cameras, mixed, video=False)
            print(describe(mine), flush=True)
            pairs.append((mine, ref))
        paced = None
        if args.paced_cameras:
            paced = await run.vmond("paced", args.paced_cameras, mixed, video=False, interval=args.paced_interval,
                                    duration=args.paced_duration)
            print(describe(paced), flush=True)
        clips = None
        if args.clips_cameras:
            clips = ([], [])
            for turn in range(1, args.clips_repeat + 1):
                for video in (False, True):
                    load = await run.vmond(f"clips-{'on' if video else 'off'}-{turn}", args.clips_cameras, generated,
                                           video=video, duration=args.clips_duration, catch_up=False,
                                           interval=args.clips_interval)
                    print(describe(load), flush=True)
                    clips[video].append(load)
    finally:
        run.stop_all()
    print()
    results = print_tables(args, pairs, paced, clips)
    print()
    print("Targets:")
    for name, (ok, value) in results.items():
        print(f"  {verdict(ok) if not name.startswith('(') else '    '}  {name}: {value}")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", default="1,8,32", help="simulated cameras per run, comma-separated")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of back-to-back load per run (3)")
    parser.add_argument("--max-mails", type=int, default=2000, help="at most this many mails per camera and run")
    parser.add_argument("--drain-timeout", type=float, default=60.0,
                        help="seconds to wait after the load for vmond's pipeline to catch up (60)")
    parser.add_argument("--paced-cameras", type=int, default=8, help="cameras of the paced run (0: skip it)")
    parser.add_argument("--paced-interval", type=float, default=1.0, help="seconds between a paced camera's mails")
    parser.add_argument("--paced-duration", type=float, default=10.0, help="seconds of the paced run (10)")
    parser.add_argument("--clips-cameras", type=int, default=8, help="cameras of the clips comparison (0: skip it)")
    parser.add_argument("--clips-duration", type=float, default=20.0, help="seconds of each clips run (20)")
    parser.add_argument("--clips-interval", type=float, default=1.0,
                        help="seconds between a camera's mails in the clips runs (1; 0: back to back)")
    parser.add_argument("--clips-repeat", type=int, default=2, help="runs without and with clips, alternating (2)")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one; put it on "
                        "the disk vmond's data directory would use, since both servers fsync)")
    parser.add_argument("--reference-server", nargs=2, metavar=("PORT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.cameras = [int(n) for n in args.cameras.split(",")]
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
          f"load {os.getloadavg()[0]:.1f}); {args.duration:g} s per run; cameras {args.cameras}, "
          f"clips comparison with {args.clips_cameras}")
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
