"""No secret in any log at any level: a real ``vmond run`` at ``logging.level: debug`` is given an RTSP URL with a
password, web and API logins (CSRF tokens, session cookie, bearer token), a camera's SMTP AUTH and a broker
password, and then its whole log output is searched for each of them."""

from __future__ import annotations

import asyncio
import logging
import re
import smtplib
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import aiohttp
import pytest
from conftest import PASSWORD, Daemon, sample, write_config
from daemon_process import DaemonProcess, process_with_admin
from helpers import b64
from mosquitto import Mosquitto, make_password_file

pytestmark = pytest.mark.slow

RTSP_PASSWORD = "rtsp-Pw-7fq2zx"
CAMERA_PASSWORD = "smtp-Pw-93kdle"
WRONG_CAMERA_PASSWORD = "smtp-Guess-55vbn"
BROKER_USER, BROKER_PASSWORD = "vmond-site", "mqtt-Pw-x81mqa"
CONFIG_CAMERA_PASSWORD = "cfg-Pw-q2w3e4"


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker that takes only the site's user name and password (conftest's ``broker`` takes anyone)."""
    server = Mosquitto(tmp_path / "broker",
                       password_file=make_password_file(tmp_path / "passwords", BROKER_USER, BROKER_PASSWORD))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def daemon_process(tmp_path: Path, password_broker: Mosquitto) -> Iterator[DaemonProcess]:
    config = write_config(
        tmp_path, logging={"level": "debug"},
        smtp={"listen": "127.0.0.1:0", "domain": "monitor.local", "auth": "per-camera"},
        mqtt={"enabled": True, "host": "127.0.0.1", "port": password_broker.port, "username": BROKER_USER,
              "password": BROKER_PASSWORD},
        accounts=[{"name": "Test Customer", "address": "1 Test Street",
                   "contacts": [{"name": "Jane Keyholder", "phone": "+15550100", "role": "keyholder"}],
                   "cameras": [{"name": "Front Door", "smtp_address": "camera-front",
                                "smtp_password": CONFIG_CAMERA_PASSWORD}]}])
    with process_with_admin(tmp_path, config) as process:
        yield process


def hidden_field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]+)"', html) or re.search(rf'name="{name}" content="([^"]+)"', html)
    assert found, f"no {name} in the page"
    return found.group(1)


def smtp_login_and_send(port: int, address: str) -> None:
    raw = sample("hikvision-ipc-intrusion.eml")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("camera")
        # A wrong guess first (AUTH PLAIN in one line), then the right password with AUTH LOGIN, as cameras do.
        code, _ = client.docmd("AUTH", "PLAIN " + b64(f"\0{address}\0{WRONG_CAMERA_PASSWORD}"))
        assert code == 535
        assert client.docmd("AUTH", "LOGIN")[0] == 334
        assert client.docmd(b64(address))[0] == 334
        code, text = client.docmd(b64(CAMERA_PASSWORD))
        assert code == 235, text
        client.sendmail("camera@cam.lan", [address], raw)


def stored_secrets(database: Path) -> dict[str, str]:
    """What the database keeps in place of the secrets (hashes) or beside them (CSRF tokens): none for a log."""
    with closing(sqlite3.connect(database)) as db:
        rows = [*db.execute("SELECT 'password hash of ' || username, password_hash FROM user"),
                *db.execute("SELECT 'SMTP password hash of ' || name, smtp_password_hash FROM camera "
                            "WHERE smtp_password_hash IS NOT NULL"),
                *db.execute("SELECT 'token hash of session ' || id, token_hash FROM session"),
                *db.execute("SELECT 'CSRF token of session ' || id, csrf_token FROM session "
                            "WHERE csrf_token IS NOT NULL")]
    assert len(rows) == 5, rows  # the admin, the new camera, the web session (token, CSRF), the API session
    return dict(rows)


def malformed_request(port: int, token: str) -> bytes:
    """A request whose Authorization header has a byte HTTP forbids: the parser refuses it (and may say why)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token.encode()
                     + b"\x01\r\n\r\n")
        return sock.recv(4096)


async def test_no_secret_reaches_the_log_at_debug(daemon_process: DaemonProcess, password_broker: Mosquitto) -> None:
    await asyncio.to_thread(daemon_process.start)
    base = f"http://127.0.0.1:{daemon_process.web_port}"
    secrets: dict[str, str] = {"admin password": PASSWORD, "RTSP password": RTSP_PASSWORD,
                               "camera SMTP password": CAMERA_PASSWORD, "wrong SMTP password": WRONG_CAMERA_PASSWORD,
                               "declared camera password": CONFIG_CAMERA_PASSWORD, "broker password": BROKER_PASSWORD}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        # The web login: the pre-login CSRF token, then the session cookie and the session's CSRF token.
        async with browser.get(f"{base}/login") as response:
            secrets["login form CSRF token"] = hidden_field(await response.text(), "csrf_token")
        async with browser.post(f"{base}/login", data={"username": "admin", "password": PASSWORD,
                                                       "csrf_token": secrets["login form CSRF token"]}) as response:
            assert response.status == 200 and response.url.path == "/", response.url
            secrets["session CSRF token"] = hidden_field(await response.text(), "csrf-token")
        secrets["session cookie"] = next(c.value for c in browser.cookie_jar if c.key == "vmond_session")
        # A camera with an RTSP URL holding a password and an SMTP password, made with the web form.
        async with browser.get(f"{base}/api/accounts") as response:
            account_id = (await response.json())["accounts"][0]["id"]
        rtsp_url = f"rtsp://admin:{RTSP_PASSWORD}@192.0.2.10:554/Streaming/Channels/101"
        async with browser.post(f"{base}/cameras", data={
                "name": "Garage", "account_id": str(account_id), "rtsp_url": rtsp_url, "smtp_password": CAMERA_PASSWORD,
                "csrf_token": secrets["session CSRF token"]}) as response:
            assert response.status == 200 and re.fullmatch(r"/cameras/\d+", response.url.path), response.url
            camera_id = int(response.url.path.rsplit("/", 1)[1])

    # The API: a bearer token, used in its header and (as some clients do) in a query string.
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/token", json={"username": "admin", "password": PASSWORD}) as response:
            token = secrets["bearer token"] = (await response.json())["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{base}/api/cameras/{camera_id}", headers=bearer) as response:
            address = (await response.json())["smtp_address"]
        async with http.get(f"{base}/api/events", params={"access_token": token}) as response:
            assert response.status == 401
    assert (await asyncio.to_thread(malformed_request, daemon_process.web_port, token)).split()[1] == b"400"

    # SMTP AUTH as the new camera (one wrong guess, then its password), and its alarm forwarded over MQTT.
    await asyncio.to_thread(smtp_login_and_send, daemon_process.smtp_port, address)
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession(headers=bearer) as http:
        while True:
            async with http.get(f"{base}/api/health") as response:
                mqtt = (await response.json())["mqtt"]
            async with http.get(f"{base}/api/events") as response:
                events = (await response.json())["events"]
            if mqtt["connected"] and events and mqtt["delivered"] > 0:
                break
            assert time.monotonic() < deadline, (mqtt, events)
            await asyncio.sleep(0.1)
    assert await asyncio.to_thread(daemon_process.stop) == 0

    log = daemon_process.log.read_text(errors="replace")
    # The log is the verbose one: debug lines, the access log, the broker connection and the mail are all in it.
    assert " DEBUG " in log and '"POST /login' in log and "mqtt: connected" in log and "accepted" in log, log[-3000:]
    forms = {**secrets}
    for what, value in secrets.items():
        forms[f"{what} (base64)"] = b64(value)
    forms["AUTH PLAIN blob"] = b64(f"\0{address}\0{WRONG_CAMERA_PASSWORD}")
    forms.update(stored_secrets(daemon_process.config.parent / "data" / "vmond.db"))
    leaked = {what: value for what, value in forms.items() if value in log}
    assert not leaked, f"secrets in the log: {sorted(leaked)}"


@pytest.fixture
def library_loggers_turned_up() -> Iterator[None]:
    """As a developer's logging configuration might: peewee and aiosmtpd at DEBUG."""
    loggers = [logging.getLogger(name) for name in ("peewee", "mail.log")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


async def test_the_guards_hold_whatever_the_library_loggers_levels(
        library_loggers_turned_up: None, daemon: Daemon, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await daemon.add_user()
    token = await daemon.token()
    status, body = await daemon.api("POST", "/api/cameras", token, json={
        "account_id": 1, "name": "Garage", "rtsp_url": f"rtsp://admin:{RTSP_PASSWORD}@192.0.2.10/"})
    assert status == 201, body
    await daemon.send(sample("hikvision-ipc-intrusion.eml"))  # AUTH LOGIN as "camera" with "secret"
    await daemon.wait_idle()
    assert any(r.name.startswith("vmond") and r.levelno == logging.DEBUG for r in caplog.records)  # debug is on
    guarded = [r for r in caplog.records
               if r.name == "peewee" or (r.name == "mail.log" and r.levelno < logging.WARNING)]
    assert not guarded, [r.getMessage()[:80] for r in guarded]
    for secret in (RTSP_PASSWORD, b64("secret"), token, PASSWORD):
        assert secret not in caplog.text
