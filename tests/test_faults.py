"""Proof under faults: crash points at every step, random SIGKILLs under load, a full disk, hostile clients.

The daemons here run with asyncio's debug mode (``PYTHONASYNCIODEBUG=1``): a callback that holds the event loop
for more than 100 ms is logged, and that fails the test. ``VMOND_FAULTS=full`` makes the soak longer (``make
test-faults``); CI runs the bounded version.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Daemon, distinct, sample, send_data, write_config
from daemon_process import DaemonProcess, Notifications, process_with_admin
from helpers import wait_until

from vmond.util.crashpoints import EXIT_CODE

pytestmark = [pytest.mark.slow, pytest.mark.faults]

FULL = os.environ.get("VMOND_FAULTS") == "full"
DEBUG_ENV = {"PYTHONASYNCIODEBUG": "1"}
SMTP_POINTS = ["after_data_read", "after_spool_write", "after_spool_fsync", "after_spool_rename", "before_250",
               "after_250", "after_db_commit"]


def stalls(log: Path) -> list[str]:
    """asyncio debug mode's reports of callbacks that held the loop (default threshold 100 ms)."""
    return [line for line in log.read_text(errors="replace").splitlines()
            if "Executing" in line and " took " in line and "seconds" in line]


@pytest.fixture
def daemon_process(tmp_path: Path) -> Iterator[DaemonProcess]:
    # Every client here is 127.0.0.1: one address may then hold every session.
    config = write_config(tmp_path, smtp={"listen": "127.0.0.1:0", "domain": "monitor.local",
                                          "max_connections": 200, "max_connections_per_peer": 200})
    with process_with_admin(tmp_path, config) as process:
        yield process
    assert stalls(process.log) == []


def database(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / "data" / "vmond.db")


def drained(data_dir: Path, timeout: float = 30.0) -> None:
    """Every spooled mail is stored (the pipeline removes a mail from the spool after its commit)."""
    spool = data_dir / "spool" / "new"
    deadline = time.monotonic() + timeout
    while any(spool.iterdir()):
        assert time.monotonic() < deadline, "the spool was not drained"
        time.sleep(0.05)


def check_consistency(tmp_path: Path) -> None:
    """No half-written spool file, and no event that lacks a picture it claims."""
    assert list((tmp_path / "data" / "spool" / "tmp").iterdir()) == []
    with database(tmp_path) as db:
        for (path,) in db.execute("SELECT path FROM media UNION SELECT thumb_path FROM media "
                                  "WHERE thumb_path IS NOT NULL"):
            assert (tmp_path / "data" / "media" / path).is_file(), path
    db.close()


def try_send(port: int, raw: bytes, to: str = "camera-front@monitor.local") -> bool:
    """One delivery as a camera makes it; True only when the camera got its 250."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("camera")
            client.login("camera", "secret")
            client.mail("cam@cam.lan")
            if client.rcpt(to)[0] != 250:
                return False
            return send_data(client, raw)[0] == 250
    except (smtplib.SMTPException, OSError):
        return False


def subjects_stored(tmp_path: Path) -> list[str]:
    with database(tmp_path) as db:
        rows = [subject for (subject,) in db.execute("SELECT subject FROM alarm_event")]
    db.close()
    return rows


@pytest.mark.parametrize("point", SMTP_POINTS)
def test_crash_points(daemon_process: DaemonProcess, tmp_path: Path, point: str) -> None:
    raw = b"Subject: crash test " + point.encode() + b"\r\nFrom: cam@cam.lan\r\n\r\nmotion\r\n"
    daemon_process.start(VMOND_CRASHPOINT=point, **DEBUG_ENV)
    acknowledged = try_send(daemon_process.smtp_port, raw)
    assert daemon_process.wait_exit() == EXIT_CODE
    daemon_process.start(**DEBUG_ENV)
    if not acknowledged:
        assert try_send(daemon_process.smtp_port, raw)  # a camera that got no 250 sends again
    drained(tmp_path / "data")
    assert daemon_process.stop() == 0
    stored = subjects_stored(tmp_path)
    assert stored == [f"crash test {point}"], stored  # exactly once, whichever step the crash hit
    check_consistency(tmp_path)


def test_random_sigkill_soak(daemon_process: DaemonProcess, tmp_path: Path) -> None:
    duration, kills = (60.0, 8) if FULL else (15.0, 3)
    daemon_process.start(**DEBUG_ENV)
    stop = threading.Event()
    lock = threading.Lock()
    sent: list[str] = []
    acknowledged: list[str] = []
    templates = [sample(name) for name in ("swann-nvr-human.eml", "amcrest-tamper.eml")]

    def camera(number: int) -> None:
        to = f"camera-{'front' if number % 2 else 'back'}@monitor.local"
        for n in range(10_000):
            if stop.is_set():
                return
            token = f"soak-{number}-{n}"
            raw = templates[n % 2].replace(b"Subject: ", f"Subject: {token} ".encode(), 1)
            with lock:
                sent.append(token)
            for _attempt in range(50):  # as a camera does: try again until it gets its 250
                if stop.is_set():
                    return
                if try_send(daemon_process.smtp_port, raw, to=to):
                    with lock:
                        acknowledged.append(token)
                    break
                time.sleep(0.2)

    threads = [threading.Thread(target=camera, args=(n,), daemon=True) for n in range(8)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    for _ in range(kills):
        time.sleep(random.uniform(0.5, duration / kills))
        daemon_process.stop(signal.SIGKILL)
        daemon_process.start(**DEBUG_ENV)
    time.sleep(max(0.0, duration - (time.monotonic() - started)))
    stop.set()
    for thread in threads:
        thread.join(60)
    drained(tmp_path / "data", timeout=180)  # SMTP takes mail faster than the pipeline makes events: catch up
    assert daemon_process.stop() == 0
    stored_subjects = subjects_stored(tmp_path)
    stored = [s.split(" ", 1)[0] for s in stored_subjects]
    lost = set(acknowledged) - set(stored)
    doubled = {token for token in stored if stored.count(token) > 1}
    print(f"soak: sent {len(sent)}, acknowledged {len(acknowledged)}, stored {len(set(stored))}, "
          f"lost {len(lost)}, doubled {len(doubled)}, kills {kills}")
    assert lost == set() and doubled == set()
    assert len(acknowledged) > 20
    check_consistency(tmp_path)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    options = f"size=12m,uid={os.getuid()},gid={os.getgid()}"
    result = subprocess.run([*sudo, "mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"the disk-full test mounts a small tmpfs: run it as root or with password-less sudo "
                    f"({result.stderr.strip()})")
    try:
        yield mount
    finally:
        subprocess.run([*sudo, "umount", "-l", str(mount)], check=False)


def test_a_full_disk_refuses_mail_and_recovers(small_disk: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, storage={"data_dir": str(small_disk), "min_free_space": "2MB"})
    filler = small_disk / "filler"
    notify = Notifications(tmp_path / "notify.sock")
    daemon_process = DaemonProcess(config, notify, tmp_path / "vmond.log")
    filler.write_bytes(b"\0" * 5_000_000)  # what an operator can delete when the alarm about the disk comes
    try:
        daemon_process.start(**DEBUG_ENV)
        raw = sample("hikvision-ipc-intrusion.eml")
        acknowledged = []
        refused = 0
        for n in range(60):  # 7 MB fill up after a dozen 350 kB mails with their pictures and clips
            if try_send(daemon_process.smtp_port, distinct(raw, n)):
                acknowledged.append(n)
            else:
                refused += 1
        assert refused > 0 and acknowledged
        status, health = daemon_process.get("/api/health")
        assert status == 200 and health["disk"]["low"]
        # Space comes back (an operator cleans up): what was spooled becomes events, and intake resumes.
        filler.unlink()
        deadline = time.monotonic() + 30
        while not try_send(daemon_process.smtp_port, distinct(raw, 1000)):
            assert time.monotonic() < deadline, "intake did not resume"
            time.sleep(0.5)
        drained(small_disk)
        assert daemon_process.stop() == 0
        with sqlite3.connect(small_disk / "vmond.db") as db:
            stored = db.execute("SELECT count(*) FROM mail").fetchone()[0]
        db.close()
        assert stored == len(acknowledged) + 1  # every 250 became an event; no 250 was followed by a loss
        assert stalls(daemon_process.log) == []
    finally:
        if daemon_process.popen is not None and daemon_process.popen.poll() is None:
            daemon_process.popen.kill()
            daemon_process.popen.wait()
        notify.close()
        shutil.rmtree(small_disk / "media", ignore_errors=True)


def test_idle_connections_and_slowloris(daemon_process: DaemonProcess) -> None:
    daemon_process.start(**DEBUG_ENV)
    held: list[socket.socket] = []
    beyond = 0
    try:
        for _ in range(1000):  # a thousand idle connections against smtp.max_connections: 200
            sock = socket.create_connection(("127.0.0.1", daemon_process.smtp_port), timeout=5)
            if sock.recv(200).startswith(b"421 4.7.0"):
                beyond += 1
                sock.close()
            else:
                held.append(sock)
        assert len(held) == 200 and beyond == 800
        for sock in held[:50]:
            sock.sendall(b"EH")  # slowloris: a command that never ends
        held.pop().close()  # one slot frees up: a camera within the limit is served once the server noticed
        deadline = time.monotonic() + 10
        while not try_send(daemon_process.smtp_port, sample("swann-nvr-human.eml")):
            assert time.monotonic() < deadline, "no camera served after a slot freed up"
            time.sleep(0.1)
    finally:
        for sock in held:
            sock.close()
    status, health = daemon_process.get("/api/health")
    assert status == 200 and health["status"] == "ok"


@pytest.mark.parametrize("point", ["after_publish", "before_puback"])
def test_mqtt_crash_points_deliver_at_least_once(tmp_path: Path, point: str) -> None:
    import json

    from mosquitto import Mosquitto, Subscriber

    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    subscriber = Subscriber(broker.port, ["vmond/test-site/events"])
    config = write_config(tmp_path, mqtt={"enabled": True, "host": "127.0.0.1", "port": broker.port},
                          video={"enabled": False})
    notify = Notifications(tmp_path / "notify.sock")
    daemon_process = DaemonProcess(config, notify, tmp_path / "vmond.log")
    try:
        assert subscriber.connected.wait(10)
        daemon_process.start(VMOND_CRASHPOINT=point, **DEBUG_ENV)
        assert try_send(daemon_process.smtp_port, sample("swann-nvr-human.eml"))
        assert daemon_process.wait_exit() == EXIT_CODE
        daemon_process.start(**DEBUG_ENV)
        deadline = time.monotonic() + 20
        while not subscriber.on("vmond/test-site/events"):
            assert time.monotonic() < deadline, "the event never reached the broker"
            time.sleep(0.05)
        drained(tmp_path / "data")
        with database(tmp_path) as db:
            while db.execute("SELECT count(*) FROM outbox_message").fetchone()[0]:
                assert time.monotonic() < deadline, "the outbox was not emptied"
                time.sleep(0.1)
        db.close()
        assert daemon_process.stop() == 0
        ids = {json.loads(m.payload)["id"] for m in subscriber.on("vmond/test-site/events")}
        assert len(ids) == 1  # delivered, possibly twice, always with the same id
        assert stalls(daemon_process.log) == []
    finally:
        if daemon_process.popen is not None and daemon_process.popen.poll() is None:
            daemon_process.popen.kill()
            daemon_process.popen.wait()
        subscriber.close()
        broker.stop()
        notify.close()


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_a_client_that_never_reads_is_dropped_and_holds_no_one_up(daemon: Daemon) -> None:
    import asyncio
    import base64
    import json

    import aiohttp

    await daemon.add_user("guard1", "guard")
    token = await daemon.token("guard1")
    # The stuck client: a WebSocket handshake over a raw socket with a tiny receive buffer, then silence.
    # (The daemon runs in this test's event loop: the blocking socket calls go to a thread.)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await asyncio.to_thread(stuck.connect, ("127.0.0.1", daemon.web_port))
    key = base64.b64encode(os.urandom(16)).decode()
    await asyncio.to_thread(stuck.sendall, (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{daemon.web_port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token}\r\n\r\n").encode())
    assert await asyncio.to_thread(stuck.recv, 12) == b"HTTP/1.1 101"
    bus = daemon.services.bus
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http, \
            http.ws_connect(f"{daemon.url}/ws") as fast:
        while bus.subscriber_count < 2:
            await asyncio.sleep(0.01)
        before = rss_bytes()
        received: dict[int, float] = {}

        async def read_fast() -> None:
            async for message in fast:
                assert message.type == aiohttp.WSMsgType.TEXT, message
                received[json.loads(message.data)["seq"]] = asyncio.get_running_loop().time()

        reader = asyncio.create_task(read_fast())
        filler = {"padding": "x" * 2000}
        sent_at: dict[int, float] = {}
        for n in range(3000):  # far more than the stuck client's queue and socket can take
            sent_at[bus.publish("event.updated", {"id": n, **filler}).seq] = asyncio.get_running_loop().time()
            if n % 50 == 0:
                await asyncio.sleep(0.01)  # bursts as a busy site has them; the good client keeps up
        await wait_until(lambda: len(received) >= len(sent_at), timeout=10, what="every message at the good client")
        delays = sorted(received[seq] - sent_at[seq] for seq in sent_at)
        assert delays[-1] < 1.0  # every message reached the good client within a second
        reader.cancel()
        await wait_until(lambda: bus.subscriber_count <= 1, timeout=20, what="the stuck client cut off")
        assert rss_bytes() - before < 100 * 1024 * 1024
    stuck.close()


async def test_an_oversized_websocket_message_closes_with_1009(daemon: Daemon) -> None:
    import aiohttp

    await daemon.add_user("guard1", "guard")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {await daemon.token('guard1')}"}) as http, \
            http.ws_connect(f"{daemon.url}/ws") as ws:
        await ws.send_str("x" * 100_000)
        message = await ws.receive(timeout=5)
        assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1009
