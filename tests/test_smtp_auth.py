"""SMTP AUTH against a hostile LAN and a careless installer: guessing is throttled per address (never locking out a
camera elsewhere), failed logins are shown with the name tried, the names cameras send are understood, and no
password reaches a transcript, a refusal or a log. Real sessions on loopback; 127.0.0.x are different hosts."""

from __future__ import annotations

import asyncio
import base64
import logging
import smtplib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import aiohttp
import pytest
from conftest import Daemon, PasswordChecks, sample, send_data
from helpers import b64
from rawsmtp import RawSession

from vmond.config import Config
from vmond.daemon import running


async def in_parallel(calls: list[Callable[[], list[str]]]) -> list[list[str]]:
    """Run blocking clients at once, on threads of their own (the default executor is the daemon's, which
    checks password hashes on it)."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(await asyncio.gather(*(loop.run_in_executor(pool, call) for call in calls)))


def plain(login: str, password: str) -> str:
    return "AUTH PLAIN " + b64(f"\0{login}\0{password}")


def _auth_session(port: int, source: str, commands: list[str]) -> list[str]:
    """EHLO, then *commands* until the server hangs up; the replies (a closed connection as "closed")."""
    session = RawSession(port, source=source)
    replies = []
    try:
        session.cmd("EHLO camera")
        for command in commands:
            try:
                replies.append(session.cmd(command))
            except (ConnectionError, OSError):
                replies.append("closed")
                break
        else:
            try:
                replies.append(session.reply())  # whatever the server says unasked (a 421), or "closed"
            except (ConnectionError, OSError, TimeoutError):
                replies.append("closed")
        return replies
    finally:
        session.close()


async def test_guessing_closes_the_session_then_throttles_the_address(per_camera: Daemon) -> None:
    daemon = per_camera
    guard = daemon.services.smtp.logins
    guard.limit, guard.window = 4, 2.0  # the real ones: 10 within 5 minutes
    port = daemon.smtp_port
    wrong = plain("camera-till", "guess")

    replies = await asyncio.to_thread(_auth_session, port, "127.0.0.2", [wrong] * 5)
    assert [r[:3] for r in replies[:3]] == ["535"] * 3
    assert replies[3].startswith("421 4.7.0 Too many failed logins") and replies[4] == "closed"

    right = plain("camera-till", "till-secret")
    replies = await asyncio.to_thread(_auth_session, port, "127.0.0.2", [wrong, right, "QUIT"])
    assert replies[0].startswith("535")  # the fourth failure within the window
    assert replies[1].startswith("454 4.7.0")  # now even the right password waits: temporary, never a 5xx
    replies = await asyncio.to_thread(_auth_session, port, "127.0.0.2", ["AUTH LOGIN"])
    assert replies[0].startswith("454 4.7.0")  # LOGIN is refused before the password is asked for

    replies = await asyncio.to_thread(_auth_session, port, "127.0.0.3", [right, "QUIT"])
    assert replies[0].startswith("235")  # a camera on another address is not locked out

    deadline = time.monotonic() + 10
    while True:  # the window slides: once the failures are old enough, the right password works again
        replies = await asyncio.to_thread(_auth_session, port, "127.0.0.2", [right, "QUIT"])
        if replies[0].startswith("235"):
            break
        assert replies[0].startswith("454") and time.monotonic() < deadline, replies
        await asyncio.sleep(0.2)


async def camera_with_stored_password(daemon: Daemon) -> dict[str, Any]:
    """A camera created in the dashboard: its password is kept as a scrypt hash, checked on a thread."""
    await daemon.add_user("boss", "supervisor")
    boss = await daemon.token("boss")
    _, account = await daemon.api("POST", "/api/accounts", boss, json={"name": "Depot"})
    _, camera = await daemon.api("POST", "/api/cameras", boss, json={"account_id": account["id"], "name": "Dock",
                                                                    "smtp_password": "dock-password"})
    return camera


async def test_parallel_guesses_cannot_pass_the_limit(per_camera: Daemon) -> None:
    daemon = per_camera
    camera = await camera_with_stored_password(daemon)
    daemon.services.smtp.logins.limit = 4
    wrong = plain(camera["smtp_address"], "guess")  # a stored hash: each check takes tens of milliseconds
    sessions = [partial(_auth_session, daemon.smtp_port, "127.0.0.4", [wrong, "QUIT"]) for _ in range(12)]
    firsts = [replies[0][:3] for replies in await in_parallel(sessions)]
    assert sorted(firsts) == ["454"] * 8 + ["535"] * 4  # counted before the hash is checked, not after


async def test_password_checks_run_at_most_two_at_a_time(per_camera: Daemon, password_checks: PasswordChecks
                                                       ) -> None:
    daemon = per_camera
    camera = await camera_with_stored_password(daemon)
    password_checks.delay = 0.1
    right = plain(camera["smtp_address"], "dock-password")
    sessions = [partial(_auth_session, daemon.smtp_port, f"127.0.1.{n}", [right, "QUIT"]) for n in range(1, 9)]
    outcomes = await in_parallel(sessions)
    assert all(replies[0].startswith("235") for replies in outcomes), outcomes
    assert password_checks.most == 2


@pytest.mark.parametrize("login", ["camera-till", "CAMERA-TILL", "camera-till@monitor.local",
                                   "Camera-Till@Monitor.Local", " camera-till ", "<camera-till@monitor.local>"])
async def test_the_names_cameras_send_are_understood(per_camera: Daemon, login: str) -> None:
    replies = await asyncio.to_thread(_auth_session, per_camera.smtp_port, "127.0.0.1",
                                      [plain(login, "till-secret"), "QUIT"])
    assert replies[0].startswith("235"), replies


@pytest.mark.parametrize("login", ["admin", "camera-till@other.example", "till", "camera-till@"])
async def test_other_names_are_refused(per_camera: Daemon, login: str) -> None:
    replies = await asyncio.to_thread(_auth_session, per_camera.smtp_port, "127.0.0.1",
                                      [plain(login, "till-secret"), "QUIT"])
    assert replies[0].startswith("535"), replies


def _deliver(port: int, source: str, login: str, password: str) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(source, 0)) as client:
        client.ehlo("camera")
        try:
            client.login(login, password)
        except smtplib.SMTPAuthenticationError as exc:
            return exc.smtp_code
        client.mail("cam@cam.lan")
        client.rcpt(login if "@" in login else f"{login}@monitor.local")
        return send_data(client, sample("swann-nvr-human.eml"))[0]


async def test_failed_logins_are_shown_with_the_name_tried(per_camera: Daemon, caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    daemon = per_camera
    caplog.set_level(logging.INFO, logger="vmond")
    port = daemon.smtp_port
    assert await asyncio.to_thread(_deliver, port, "127.0.0.6", "camera-till", "till-secret") == 250
    for _ in range(3):  # the camera was reconfigured and now logs in as "admin"
        assert await asyncio.to_thread(_deliver, port, "127.0.0.6", "admin", "till-secret") == 535
    assert await asyncio.to_thread(_deliver, port, "127.0.0.7", "camera-door", "wrong") == 535
    await daemon.wait_idle()
    await daemon.add_user("installer", "supervisor")
    token = await daemon.token("installer")
    status, body = await daemon.api("GET", "/api/smtp/auth-failures", token)
    assert status == 200
    door, admin = body["auth_failures"]  # the most recent first
    # smtplib tries PLAIN, then LOGIN: two failed logins per attempt
    assert admin["peer"] == "127.0.0.6" and admin["name"] == "admin" and admin["count"] == 6
    assert admin["reason"] == "unknown_name" and admin["camera"] is None
    assert admin["peer_camera"]["name"] == "Till"  # the address used to deliver for this camera
    assert admin["first_at"] <= admin["last_at"]
    assert door["name"] == "camera-door" and door["reason"] == "wrong_password"
    assert door["camera"]["name"] == "Door" and door["peer_camera"] is None
    logged = [r for r in caplog.records if r.name == "vmond.ingest.smtpguard" and "127.0.0.6" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.INFO  # once per address per interval
    assert "'admin' is no camera's login name" in logged[0].getMessage()

    async with aiohttp.ClientSession() as http, http.get(
            f"{daemon.url}/cameras", headers={"Authorization": f"Bearer {token}"}) as response:
        page = await response.text()
    assert "Failed SMTP logins" in page and "127.0.0.6" in page and "<code>admin</code>" in page
    assert "last mail for" in page
    status, guard_view = await daemon.api("GET", "/api/smtp/auth-failures", None)
    assert status == 401


SECRET = "Hunter2-Secret"


def _decoded(word: str) -> bytes:
    try:
        return base64.b64decode(word, validate=True)
    except ValueError:
        return b""


def _hostile_session(port: int, lines: list[str]) -> None:
    """A session that sends *lines* raw (AUTH shapes and challenge answers), then delivers a mail so that the
    transcript is kept for camera-front."""
    session = RawSession(port)
    try:
        session.cmd("EHLO camera")
        replies = [session.cmd(line) for line in lines]
        if not replies[-1].startswith("235"):  # accept-any: whatever decodes cleanly logs in
            assert session.cmd(plain("cam", "x")).startswith("235")
        session.cmd("MAIL FROM:<cam@cam.lan>")
        assert session.cmd("RCPT TO:<camera-front@monitor.local>").startswith("250")
        session.cmd("DATA")
        session.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
        assert session.reply().startswith("250")
        session.cmd("QUIT")
    finally:
        session.close()


HOSTILE_SHAPES = [
    ["AUTH PLAIN " + b64(f"camera-front\0{SECRET}")],  # one NUL
    ["AUTH PLAIN " + b64(f"\0camera-front\0{SECRET}\0more")],  # three NULs
    ["AUTH PLAIN " + b64(SECRET)],  # no NUL
    [f"AUTH PLAIN {SECRET}"],  # not base64
    ["AUTH PLAIN " + b64(b"cam\xff\0" + SECRET.encode())],  # not UTF-8, one NUL
    ["AUTH PLAIN " + b64(b"\0cam\xff\0" + SECRET.encode())],  # not UTF-8 in the name
    ["AUTH LOGIN " + b64("camera-front") + " " + b64(SECRET)],  # user name and password on one line
    [f"AUTH LOGIN camera-front {SECRET}"],
    ["AUTH LOGIN " + b64(f"camera-front\0{SECRET}"), b64("x")],  # a "name" with a NUL in it
    ["AUTH LOGIN", b64("camera-front"), b64(SECRET)],  # the challenge answers
    ["AUTH LOGIN", b64("camera-front"), SECRET],  # a password answer that is not base64
    ["AUTH LOGIN", SECRET],  # a name answer that is not base64
    ["AUTH PLAIN", b64(f"\0camera-front\0{SECRET}")],
    ["AUTH PLAIN", b64(f"camera-front\0{SECRET}")],
    [f"AUTH {SECRET}"],  # a "mechanism"
    [f"AUTH {SECRET} {b64(SECRET)}"],
]


async def test_a_scanner_cannot_hide_a_camera_that_fails(per_camera: Daemon, caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    caplog.set_level(logging.INFO, logger="vmond")
    port = per_camera.smtp_port
    wrong_name = plain("admin", "admin")
    for n in range(15):  # a scanner on fifteen addresses: its lines are bounded
        await asyncio.to_thread(_auth_session, port, f"127.0.5.{n + 1}", [wrong_name, "QUIT"])
    # ... and the camera whose password was changed on one side only is still said.
    await asyncio.to_thread(_auth_session, port, "127.0.6.1", [plain("camera-till", "old-secret"), "QUIT"])
    lines = [r.getMessage() for r in caplog.records if r.name == "vmond.ingest.smtpguard"]
    assert len([line for line in lines if "'admin'" in line]) <= 10
    assert [line for line in lines if "wrong password for camera 'Till'" in line]


async def test_no_auth_shape_puts_the_password_in_a_transcript_or_log(daemon: Daemon,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="vmond")
    transcripts: list[list[str]] = []
    original = daemon.services.ingest.session_ended

    def keep(session_log: object) -> None:
        transcripts.append(session_log.transcript())  # type: ignore[attr-defined]
        original(session_log)  # type: ignore[arg-type]

    daemon.services.ingest.session_ended = keep  # type: ignore[method-assign]
    for lines in HOSTILE_SHAPES:
        await asyncio.to_thread(_hostile_session, daemon.smtp_port, lines)
    await daemon.wait_idle()
    secrets = {SECRET, "Hunter2"} | {word for lines in HOSTILE_SHAPES for line in lines for word in line.split()
                                     if SECRET in word or SECRET.encode() in _decoded(word)}
    assert len(secrets) >= 8  # the password in every encoding the shapes carried it
    assert len(transcripts) == len(HOSTILE_SHAPES)
    for transcript in transcripts:
        text = "\n".join(transcript)
        assert not any(secret in text for secret in secrets), text
    assert "C: <user name camera-front>" in "\n".join(transcripts[9])  # what the camera sent, minus the secret
    assert "C: <password, not shown>" in "\n".join(transcripts[9])
    assert "C: AUTH PLAIN user=camera-front ***" not in "\n".join(transcripts[0])

    await daemon.add_user("installer", "supervisor")
    token = await daemon.token("installer")
    for path in ("/api/cameras", "/api/smtp/refusals", "/api/smtp/auth-failures", "/cameras", "/cameras/1"):
        async with aiohttp.ClientSession() as http, http.get(
                f"{daemon.url}{path}", headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200
            text = await response.text()
        assert not any(secret in text for secret in secrets), path
    assert not any(secret in caplog.text for secret in secrets)


async def test_per_camera_auth_warns_once_at_start_not_per_session(make_config: Callable[..., Config],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    config = make_config(smtp={"listen": "127.0.0.1:0", "domain": "monitor.local", "auth": "per-camera"},
                         accounts=[{"name": "Shop", "cameras": [
                             {"name": "Till", "smtp_address": "camera-till", "smtp_password": "till-secret"}]}])
    async with running(config) as services:
        for _ in range(3):
            assert await asyncio.to_thread(_deliver, services.smtp.port, "127.0.0.1", "camera-till",
                                           "till-secret") == 250
    assert not [r for r in caplog.records if "auth_require_tls" in r.getMessage()]
    clear_text = [r for r in caplog.records if "travel in clear text" in r.getMessage()]
    assert len(clear_text) == 1 and clear_text[0].levelno == logging.WARNING
