"""The receivers the ingest benchmark loads: vmond in a subprocess, and the bare reference receiver.

* vmond: ``vmond run`` on a temporary configuration (ports from the READY notification on a stand-in
  ``NOTIFY_SOCKET``, one account with a camera address per simulated camera, ``events.coalesce_window: 0s``), run
  with the service unit's environment;
* reference: ``bench/ingest.py --reference-server PORT DIR`` (:func:`reference_server`), a bare asyncio server that
  answers the dialogue minimally, reads DATA with one ``readuntil(b"\\r\\n.\\r\\n")``, writes it to a file, fsyncs
  file and directory in a thread and answers 250: the least any receiver that keeps its promise does.

Stopping a receiver stops everything it started, also when it has to be killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from proctree import ProcessTree, descendants, rss_mb, stat_fields, stop_process  # bench/ is the script's own folder

ROOT = Path(__file__).resolve().parent.parent
INGEST_SCRIPT = Path(__file__).with_name("ingest.py")  # runs the reference server: --reference-server PORT DIR
DOMAIN = "monitor.local"
PASSWORD = "bench password 1"
IO_TIMEOUT = 30.0  # any single SMTP reply, WebSocket read or process start
REFERENCE_READ_LIMIT = 64 << 20
CLIP_FPS = 2.0  # video.fps and video.max_width of the runs with video on (vmond's defaults)
CLIP_MAX_WIDTH = 1280


# ---------------------------------------------------------------------------------------------------------------
# The reference receiver (its own process)


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
# Starting and stopping the receivers


def unit_environment() -> dict[str, str]:
    """The Environment= lines of systemd/vmond.service: vmond is measured the way the appliance runs it."""
    found: dict[str, str] = {}
    unit = ROOT / "systemd" / "vmond.service"
    for line in unit.read_text().splitlines() if unit.is_file() else ():
        if line.startswith("Environment="):
            found.update(item.split("=", 1) for item in line.split("=", 1)[1].split())
    return found


UNIT_ENVIRONMENT = unit_environment()


class Notifications:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET; ``address`` is the variable's value.

    In the abstract namespace ("@name", as systemd allows): a path in a deep scratch folder can be longer than a
    socket address may be."""

    def __init__(self) -> None:
        name = f"vmond-bench-{os.getpid()}-{secrets.token_hex(6)}"
        self.address = f"@{name}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(f"\0{name}")

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
                self.tree.see(pid)
        stop_process(process)
        for pid, started in (self.tree.seen if self.tree else {}).items():
            # Workers left behind by a daemon that had to be killed: only processes it started (same start time).
            fields = stat_fields(pid)
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
        command = [sys.executable, str(INGEST_SCRIPT), "--reference-server", "0", str(self.directory)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE)
        self.tree = ProcessTree(self.process.pid)
        assert self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], IO_TIMEOUT)
        line = self.process.stdout.readline().decode() if readable else ""
        if not line.startswith("READY "):
            raise RuntimeError(f"reference server did not start: {line!r}")
        self.smtp_port = int(line.split()[1])


class Vmond(Server):
    name = "vmond"

    def __init__(self, folder: Path, template: Path, cameras: int, video: bool, encoder: str = "auto") -> None:
        super().__init__()
        self.folder = folder
        self.web_port = 0
        self.token = ""
        self.idle_rss = 0.0  # main process, right after READY
        data = folder / "data"
        shutil.copytree(template, data)  # the database with the bench's user, made once
        self.video = video
        self.config = write_vmond_config(folder, data, cameras, video, encoder)
        self.notify = Notifications()

    def start(self) -> None:
        env = {**os.environ, "NOTIFY_SOCKET": self.notify.address, "PYTHONPATH": str(ROOT), **UNIT_ENVIRONMENT}
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


def vmond_config(data: Path, cameras: int, video: bool, encoder: str = "auto") -> dict[str, Any]:
    return {
        "site": {"id": "bench", "name": "Ingest benchmark"},
        "storage": {"data_dir": str(data), "min_free_space": 0},
        "smtp": {"listen": "127.0.0.1:0", "domain": DOMAIN, "auth": "accept-any", "max_connections": cameras + 8,
                 "max_connections_per_peer": cameras + 8},  # every simulated camera mails from 127.0.0.1
        "web": {"listen": "127.0.0.1:0"},
        "events": {"coalesce_window": "0s"},
        "video": {"enabled": video, "fps": CLIP_FPS, "max_width": CLIP_MAX_WIDTH, "encoder": encoder},
        "accounts": [{"name": "Bench", "cameras": [
            {"name": f"Camera {index}", "smtp_address": camera_address(index).split("@")[0]}
            for index in range(cameras)]}],
    }


def write_vmond_config(folder: Path, data: Path, cameras: int, video: bool, encoder: str = "auto") -> Path:
    path = folder / "vmond.yaml"
    path.write_text(json.dumps(vmond_config(data, cameras, video, encoder), indent=1))  # JSON is YAML
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
