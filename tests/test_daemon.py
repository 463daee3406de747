"""``vmond run`` as a real process: the systemd notify sequence, SIGTERM, and SIGKILL right after a 250."""

from __future__ import annotations

import signal
import smtplib
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import sample, send_data, write_config
from daemon_process import DaemonProcess, process_with_admin

pytestmark = pytest.mark.slow


@pytest.fixture
def daemon_process(tmp_path: Path) -> Iterator[DaemonProcess]:
    with process_with_admin(tmp_path, write_config(tmp_path)) as process:
        yield process


def test_notify_sequence_ready_watchdog_stopping(daemon_process: DaemonProcess) -> None:
    daemon_process.start(watchdog_usec=1_000_000)
    # READY means listening: both sockets answer at once.
    with smtplib.SMTP("127.0.0.1", daemon_process.smtp_port, timeout=5) as client:
        assert client.noop()[0] == 250
    status, health = daemon_process.get("/api/health")
    assert status == 200 and health["status"] == "ok"
    daemon_process.notify.wait_for("WATCHDOG=1", timeout=5)
    daemon_process.notify.wait_for("WATCHDOG=1", timeout=5)
    idle = smtplib.SMTP("127.0.0.1", daemon_process.smtp_port, timeout=5)
    idle.ehlo("camera")
    assert daemon_process.stop(signal.SIGTERM) == 0
    daemon_process.notify.wait_for("STOPPING=1", 1)
    # An idle session is told why it is being closed, with a code that makes the camera retry.
    code, text = idle.getreply()
    assert code == 421, text
    idle.close()
    order = [m.split("\n")[0].split("=")[0] for m in daemon_process.notify.seen]
    assert order[0] == "READY" and "STOPPING" in order and order.index("STOPPING") > order.index("WATCHDOG")


def test_sigkill_right_after_250_loses_nothing_and_duplicates_nothing(daemon_process: DaemonProcess,
                                                                      tmp_path: Path) -> None:
    raw = sample("hikvision-ipc-intrusion.eml")
    daemon_process.start()
    with smtplib.SMTP("127.0.0.1", daemon_process.smtp_port, timeout=10) as client:
        client.ehlo("camera")
        client.mail("cam@cam.lan")
        client.rcpt("camera-front@monitor.local")
        code, text = send_data(client, raw)
        assert code == 250, text
        daemon_process.stop(signal.SIGKILL)  # the instant the camera has its 250
    daemon_process.start()
    token = daemon_process.token()
    deadline = time.monotonic() + 10
    while True:
        _, body = daemon_process.get("/api/events?status=all", token)
        if body["events"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(body["events"]) == 1
    assert len(body["events"][0]["images"]) == 3
    assert not list((tmp_path / "data" / "spool" / "tmp").iterdir())
    assert daemon_process.stop() == 0


def test_sighup_applies_new_cameras_without_dropping_sessions(daemon_process: DaemonProcess) -> None:
    daemon_process.start()
    session = smtplib.SMTP("127.0.0.1", daemon_process.smtp_port, timeout=10)
    session.ehlo("camera")
    config = yaml.safe_load(daemon_process.config.read_text())
    config["accounts"][0]["cameras"].append({"name": "Garage", "smtp_address": "camera-garage"})
    daemon_process.config.write_text(yaml.safe_dump(config))
    assert daemon_process.popen is not None
    daemon_process.popen.send_signal(signal.SIGHUP)
    assert "reloaded 1 account(s), 3 camera(s)" in daemon_process.notify.wait_for("READY=1")
    # The session opened before the reload goes on, and knows the new camera.
    session.mail("cam@cam.lan")
    assert session.rcpt("camera-garage@monitor.local")[0] == 250
    raw = sample("swann-nvr-human.eml")
    assert send_data(session, raw)[0] == 250
    session.quit()
    daemon_process.config.write_text("smpt: {}\n")  # a typo: nothing changes, the daemon says why
    daemon_process.popen.send_signal(signal.SIGHUP)
    assert "reload refused: 1 problem(s)" in daemon_process.notify.wait_for("READY=1")
    with smtplib.SMTP("127.0.0.1", daemon_process.smtp_port, timeout=10) as client:
        client.ehlo("camera")
        client.mail("cam@cam.lan")
        assert client.rcpt("camera-garage@monitor.local")[0] == 250
    assert daemon_process.stop() == 0
    log = daemon_process.log.read_text()
    assert "did you mean `smtp`" in log


def page(daemon_process: DaemonProcess, path: str, token: str) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{daemon_process.web_port}{path}",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def test_after_sighup_the_dashboard_shows_the_reloaded_accounts(daemon_process: DaemonProcess) -> None:
    daemon_process.start()
    token = daemon_process.token()
    config = yaml.safe_load(daemon_process.config.read_text())
    account = config["accounts"][0]
    account["address"] = "2 New Road"
    account["contacts"][0]["phone"] = "+15550199"
    account["cameras"].append({"name": "Garage", "smtp_address": "camera-garage"})
    daemon_process.config.write_text(yaml.safe_dump(config))
    assert daemon_process.popen is not None
    daemon_process.popen.send_signal(signal.SIGHUP)
    assert "reloaded 1 account(s), 3 camera(s)" in daemon_process.notify.wait_for("READY=1")
    # The API, the pages and the configuration shown on /settings all tell the file as it is now.
    _, body = daemon_process.get("/api/accounts", token)
    [shown] = body["accounts"]
    assert shown["address"] == "2 New Road" and shown["contacts"][0]["phone"] == "+15550199"
    assert [c["name"] for c in shown["cameras"]] == ["Back Yard", "Front Door", "Garage"]
    assert "camera-garage@monitor.local" in page(daemon_process, "/cameras", token)
    settings = page(daemon_process, "/settings", token)
    assert "2 New Road" in settings and "+15550199" in settings and "camera-garage" in settings
    assert "1 Test Street" not in settings and "+15550100" not in settings
    assert daemon_process.stop() == 0


def descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # zombies are gone
    except OSError:
        return False


def test_workers_do_not_outlive_a_killed_daemon(daemon_process: DaemonProcess) -> None:
    daemon_process.start()
    assert daemon_process.popen is not None
    workers = descendants(daemon_process.popen.pid)
    assert len(workers) >= 3  # the fork server and the parser and encoder workers
    daemon_process.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive := {pid for pid in workers if running(pid)}:
        assert time.monotonic() < deadline, f"left behind: {alive}"
        time.sleep(0.1)
