"""The central benchmark's rig: mosquitto, the central ``vmond run`` and the clients that watch it.

The broker and the central run as subprocesses on free loopback ports, in the bench's scratch folder; the central's
API and ``/ws`` are used with a bearer token, as any API client does; a bare paho subscriber is the reference. Every
wait is bounded; ``stop()`` ends what ``start()`` began, also on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from ingestservers import UNIT_ENVIRONMENT, Notifications
from proctree import cpu_seconds, descendants, rss_mb, stop_process
from sites import PREFIX

from vmond.mqtt.client import paho_client

ROOT = Path(__file__).resolve().parent.parent
MOSQUITTO = "/usr/sbin/mosquitto"
PASSWORD = "bench password 1"
IO_TIMEOUT = 30.0
TOKEN = re.compile(rb"\[b(\d+)\]")  # the bench's token in an event's subject: [b123]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = IO_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} is not listening on port {port}") from None
            time.sleep(0.05)


# ---------------------------------------------------------------------------------------------------------------
# The broker and the central


class Broker:
    """mosquitto on a free loopback port. The central's persistent session may fall behind in a burst: the broker
    holds what it has not taken yet (``max_queued_messages``; mosquitto's default of 1000 would drop the rest)."""

    def __init__(self, folder: Path, max_queued: int, max_inflight: int) -> None:
        self.folder = folder
        self.port = free_port()
        self.max_queued = max_queued
        self.max_inflight = max_inflight
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "mosquitto.conf"
        conf.write_text("\n".join([
            f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false",
            f"user {getpass.getuser()}", "log_dest stderr", "log_type error", "log_type warning",
            f"max_queued_messages {self.max_queued}", f"max_inflight_messages {self.max_inflight}", ""]))
        with (self.folder / "mosquitto.log").open("ab") as log:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
        wait_listening(self.port, self.process, "mosquitto")

    def stop(self) -> None:
        stop_process(self.process)


class Database:
    """A throw-away PostgreSQL cluster (``tests/postgres.py``: Debian's binaries, a free loopback port) with one
    fresh database, for central nodes that share it; ``url`` once started."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = ""
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "postgres.log").open("a") as log:
            self.process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "postgres.py")], text=True,
                                            stdout=subprocess.PIPE, stderr=log)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()  # the script prints the URL once the cluster is up
        if not line.startswith("postgresql://"):
            self.stop()
            raise RuntimeError(f"PostgreSQL did not start: {line!r} (see {self.folder / 'postgres.log'})")
        self.url = line

    def stop(self) -> None:
        stop_process(self.process)


class Central:
    """``vmond run`` as a central station on a temporary configuration, with the bench's admin user. With
    *database* (a PostgreSQL URL) and *node*, one of several nodes that share that database and the broker."""

    def __init__(self, folder: Path, broker_port: int, secret: str, node: str | None = None,
                 database: str | None = None) -> None:
        self.folder = folder
        self.node = node
        self.web_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.log = folder / "vmond.log"
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "vmond.yaml"
        storage: dict[str, Any] = {"data_dir": str(folder / "data"), "min_free_space": 0}
        central: dict[str, Any] = {"mqtt": {"host": "127.0.0.1", "port": broker_port, "topic_prefix": PREFIX},
                                   "sites": "auto", "command_secret": secret}
        if database is not None:
            storage["database"] = database
        if node is not None:
            central["node"] = node
        self.config.write_text(json.dumps({  # JSON is YAML
            "site": {"id": "central-1", "name": "Bench Central"},
            "storage": storage,
            "web": {"listen": f"127.0.0.1:{self.web_port}"},
            "central": central,
        }, indent=1))
        self.notify = Notifications()

    def start(self, add_user: bool = True) -> None:
        """Start it; *add_user*: make the bench's admin first (once per database: the nodes share it)."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if add_user:
            made = subprocess.run([sys.executable, "-m", "vmond", "user", "add", "bench", "--role", "admin",
                                   "--password-stdin", "--config", str(self.config)], input=f"{PASSWORD}\n".encode(),
                                  capture_output=True, env=env, timeout=120)
            if made.returncode != 0:
                raise RuntimeError(f"vmond user add failed: {made.stdout.decode()}{made.stderr.decode()}")
        env.update(NOTIFY_SOCKET=self.notify.address, **UNIT_ENVIRONMENT)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "vmond", "run", "--config", str(self.config)],
                                            env=env, stdout=log, stderr=subprocess.STDOUT)
        self.notify.wait_for("READY=1", self.process)
        wait_listening(self.web_port, self.process, "the central's dashboard")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss(self) -> float:
        """MB: the main process (where the mirror, the database and the web server are)."""
        return rss_mb(self.pid)

    def rss_others(self) -> float:
        """MB: the processes it started (a central starts vmond's worker pool too)."""
        return sum(rss_mb(pid) for pid in descendants(self.pid))

    def cpu(self) -> float:
        own, reaped = cpu_seconds(self.pid)
        return own + reaped + sum(sum(cpu_seconds(pid)) for pid in descendants(self.pid))

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        try:
            stop_process(self.process)
        finally:
            self.notify.close()


class Api:
    """The central's HTTP API and ``/ws`` with a bearer token, as any client of the dashboard's API."""

    def __init__(self, central: Central) -> None:
        self.base = f"http://127.0.0.1:{central.web_port}"
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=IO_TIMEOUT))
        self.token = ""

    async def sign_in(self) -> None:
        async with self.session.post(f"{self.base}/api/token",
                                     json={"username": "bench", "password": PASSWORD}) as response:
            response.raise_for_status()
            self.token = (await response.json())["access_token"]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def get(self, path: str) -> Any:
        async with self.session.get(f"{self.base}{path}", headers=self.headers) as response:
            response.raise_for_status()
            return await response.json()

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.post(f"{self.base}{path}", headers=self.headers, json=body) as response:
            return response.status, await response.json(content_type=None)

    async def close(self) -> None:
        await self.session.close()


# ---------------------------------------------------------------------------------------------------------------
# What arrives: the central's WebSocket and the bare subscriber


@dataclass
class Sighting:
    at: float  # perf_counter when it arrived
    data: dict[str, Any]  # the Event as the central's WebSocket showed it


class Live:
    """The central's ``/ws``: the first ``event.*`` message of each bench event (found by the token in its
    subject), and every message, for whoever waits for something else (a command's state). The sockets of
    several nodes may share *first* and *newest* (the first sighting on any node counts); ``mine`` is this
    socket's own."""

    def __init__(self, api: Api, first: dict[int, Sighting] | None = None,
                 newest: dict[int, Sighting] | None = None) -> None:
        self.api = api
        self.first: dict[int, Sighting] = {} if first is None else first  # token -> first sighting
        self.newest: dict[int, Sighting] = {} if newest is None else newest  # central event id -> newest sighting
        self.mine: set[int] = set()  # tokens this socket saw
        self.watchers: list[Callable[[str, dict[str, Any], float], None]] = []
        self.seq = 0
        self.closes: list[str] = []  # how the socket ended, each time it had to reconnect
        self.resyncs = 0
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._connected.wait(), IO_TIMEOUT)

    async def _run(self) -> None:
        while True:
            query = f"?since={self.seq}" if self.seq else ""
            try:
                async with self.api.session.ws_connect(f"{self.api.base.replace('http', 'ws')}/ws{query}",
                                                       headers=self.api.headers, max_msg_size=0,
                                                       heartbeat=None) as ws:
                    self._connected.set()
                    async for message in ws:
                        if message.type == aiohttp.WSMsgType.TEXT:
                            self.on_message(json.loads(message.data), time.perf_counter())
                    self.closes.append(f"closed {ws.close_code}")
            except (aiohttp.ClientError, OSError) as exc:
                self.closes.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.2)

    def on_message(self, message: dict[str, Any], now: float) -> None:
        kind = message.get("type", "")
        self.seq = max(self.seq, int(message.get("seq") or 0))
        if kind == "resync":
            self.resyncs += 1
        data = message.get("data") if isinstance(message.get("data"), dict) else {}
        if kind.startswith("event.") and data:
            sighting = Sighting(now, data)
            if isinstance(data.get("id"), int):
                self.newest[data["id"]] = sighting
            found = TOKEN.search(str(data.get("subject") or "").encode())
            if found is not None:
                self.mine.add(int(found.group(1)))
                self.first.setdefault(int(found.group(1)), sighting)
        for watcher in list(self.watchers):
            watcher(kind, data, now)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class BareSubscriber:
    """The reference: a paho client subscribed at QoS 1, noting when each token arrives, and nothing else."""

    def __init__(self, port: int, topic: str) -> None:
        self.arrived: dict[int, float] = {}
        self.count = 0
        self.last = 0.0
        self.ready = threading.Event()
        self.client = paho_client(f"bench-reference-{os.getpid()}")
        self.client.on_connect = lambda client, *args: client.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *args: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=60)
        self.client.loop_start()
        if not self.ready.wait(IO_TIMEOUT):
            raise RuntimeError("the reference subscriber did not subscribe")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        now = time.perf_counter()
        self.count += 1
        self.last = now
        found = TOKEN.search(message.payload[:4000])
        if found is not None:
            self.arrived.setdefault(int(found.group(1)), now)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Sampler:
    """The central's RSS and CPU every 0.2 s, with a label for the phase it is in."""

    def __init__(self, central: Central) -> None:
        self.central = central
        self.phase = "start"
        self.peak: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            rss = await asyncio.to_thread(self.central.rss)
            self.peak[self.phase] = max(self.peak.get(self.phase, 0.0), rss)
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def wait_until(check: Callable[[], bool], timeout: float, poll: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll)
    return True


def start_profiler(output: Path, pid: int) -> subprocess.Popen[bytes]:
    """py-spy (``pip install py-spy``) sampling the central, collapsed stacks into *output*."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "50", "--nonblocking",
                             "--output", str(output)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_profiler(profiler: subprocess.Popen[bytes]) -> None:
    profiler.send_signal(signal.SIGINT)
    try:
        profiler.wait(60)
    except subprocess.TimeoutExpired:
        profiler.kill()
        profiler.wait(10)


def profile_summary(path: Path, top: int = 25) -> list[str]:
    """The functions most samples were in (inclusive; a function counted once per sample), from py-spy's
    collapsed stacks; the event loop's own waiting (``select``) shows how idle the main thread was."""
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines() if path.is_file() else ():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for frame in set(stack.split(";")):
            name = re.sub(r":\d+\)?$", "", frame).replace(" (", " ")
            inclusive[name] = inclusive.get(name, 0) + int(count)
    ranked = sorted(inclusive.items(), key=lambda item: -item[1])[:top]
    return [f"{100 * count / total:5.1f} %  {name}" for name, count in ranked] if total else []
