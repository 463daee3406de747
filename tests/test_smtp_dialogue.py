"""The SMTP dialogue as odd camera firmware speaks it: real sessions on loopback, raw sockets for the odd parts."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import ssl
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Daemon, sample, send_data
from rawsmtp import RawSession

from vmond.config import Config
from vmond.daemon import running
from vmond.store.events import list_events


async def in_thread(fn: Callable[..., object], *args: object) -> object:
    return await asyncio.to_thread(fn, *args)


async def events(daemon: Daemon) -> list[dict]:
    await daemon.wait_idle()
    return await daemon.services.db.read(list_events, "monitor.local", "all", 100, True)


def _ehlo_features(port: int) -> str:
    session = RawSession(port)
    try:
        return session.cmd("EHLO camera")
    finally:
        session.close()


async def test_ehlo_advertises_auth_size_and_utf8(daemon: Daemon) -> None:
    features = await asyncio.to_thread(_ehlo_features, daemon.smtp_port)
    assert "250-AUTH LOGIN PLAIN" in features
    assert f"250-SIZE {daemon.config.smtp.max_message_size}" in features
    assert "SMTPUTF8" in features and "8BITMIME" in features
    assert "STARTTLS" not in features  # no certificate configured


def _lowercase_auth_plain_inline(port: int) -> list[str]:
    session = RawSession(port)
    try:
        token = base64.b64encode(b"\0camera\0secret").decode()
        return [session.cmd("ehlo camera"), session.cmd(f"auth plain {token}"), session.cmd("quit")]
    finally:
        session.close()


async def test_mechanism_names_are_case_insensitive(daemon: Daemon) -> None:
    _, auth, bye = await asyncio.to_thread(_lowercase_auth_plain_inline, daemon.smtp_port)
    assert auth.startswith("235 ") and bye.startswith("221")


def _keepalive(port: int) -> list[str]:
    session = RawSession(port)
    try:
        return [session.greeting, session.cmd("QUIT")]
    finally:
        session.close()


async def test_connect_then_quit_keepalive(daemon: Daemon) -> None:
    greeting, bye = await asyncio.to_thread(_keepalive, daemon.smtp_port)
    assert greeting.startswith("220 ") and bye.startswith("221")
    assert await events(daemon) == []


def _non_ascii_envelope(port: int, raw: bytes) -> list[str]:
    session = RawSession(port)
    try:
        replies = [session.cmd("HELO kamera"),  # no EHLO, so no SMTPUTF8 either: as cheap firmware does it
                   session.cmd("MAIL FROM:<Kamera-Büro@cam.lan>".encode()),
                   session.cmd("RCPT TO:<Büro@monitor.local>".encode()),
                   session.cmd("RCPT TO:<camera-front@monitor.local>"),
                   session.cmd("DATA")]
        session.send(raw + b".\r\n")
        replies.append(session.reply())
        return replies
    finally:
        session.close()


async def test_non_ascii_envelope_without_smtputf8(daemon: Daemon) -> None:
    raw = sample("reolink-person.eml")
    helo, mail, unknown, known, data, done = await asyncio.to_thread(_non_ascii_envelope, daemon.smtp_port, raw)
    assert mail.startswith("250") and known.startswith("250") and data.startswith("354")
    assert unknown.startswith("550 5.1.1")
    assert done.startswith("250 "), done
    (event,) = await events(daemon)
    assert event["camera"]["name"] == "Front Door"


def _bare_lf_long_lines_and_smuggling(port: int) -> list[str]:
    session = RawSession(port)
    try:
        session.cmd("EHLO camera")
        session.cmd("MAIL FROM:<cam@cam.lan>")
        session.cmd("RCPT TO:<camera-front@monitor.local>")
        session.cmd("DATA")
        body = (b"Subject: smuggled?\n\nbare LF lines\n" + b"x" * 5000 + b"\n"
                b".\nMAIL FROM:<evil@evil>\nRCPT TO:<camera-back@monitor.local>\nDATA\nSubject: second\n\n.\n"
                b"\r\n.\r\n")
        session.send(body)
        return [session.reply(), session.cmd("QUIT")]
    finally:
        session.close()


async def test_bare_lf_long_lines_and_no_smuggling(daemon: Daemon) -> None:
    done, _ = await asyncio.to_thread(_bare_lf_long_lines_and_smuggling, daemon.smtp_port)
    assert done.startswith("250 "), done
    (event,) = await events(daemon)  # one message: a bare "\n.\n" ends nothing
    assert event["camera"]["name"] == "Front Door" and event["subject"] == "smuggled?"


async def test_dot_stuffed_content_is_stored_byte_for_byte(daemon: Daemon) -> None:
    raw = b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n ...\r\nend\r\n"
    spooled: list[bytes] = []
    original = daemon.services.pipeline.notify

    def capture(name: str = "") -> None:
        spooled.append(daemon.services.spool.load(name).content)
        original(name)

    daemon.services.ingest._on_spooled = capture
    assert (await daemon.send(raw))["data"][0] == 250
    assert spooled == [raw]  # what the camera meant, after the transport's dot-stuffing is undone


def _idle(port: int) -> tuple[str, bytes]:
    session = RawSession(port)
    try:
        session.sock.settimeout(10)
        return session.greeting, session.sock.recv(100)  # b"" once the server hangs up
    finally:
        session.close()


async def test_idle_sessions_are_reaped(make_config: Callable[..., Config]) -> None:
    config = make_config(smtp={"listen": "127.0.0.1:0", "domain": "monitor.local", "idle_timeout": "1s"})
    async with running(config) as services:
        started = asyncio.get_running_loop().time()
        greeting, after = await asyncio.to_thread(_idle, services.smtp.port)
        assert greeting.startswith("220") and after == b""
        assert asyncio.get_running_loop().time() - started < 5
        assert not services.smtp.sessions


async def test_size_is_refused_at_mail_from_and_in_data(make_config: Callable[..., Config]) -> None:
    config = make_config(smtp={"listen": "127.0.0.1:0", "domain": "monitor.local", "max_message_size": "50KB"})

    def oversized(port: int) -> list[str]:
        session = RawSession(port)
        try:
            session.cmd("EHLO camera")
            declared = session.cmd("MAIL FROM:<cam@cam.lan> SIZE=60000")
            session.cmd("MAIL FROM:<cam@cam.lan>")
            session.cmd("RCPT TO:<camera-front@monitor.local>")
            session.cmd("DATA")
            session.send(b"Subject: big\r\n\r\n" + b"A" * 76 + b"\r\n" * 1 + (b"B" * 998 + b"\r\n") * 200 + b".\r\n")
            return [declared, session.reply(), session.cmd("NOOP")]
        finally:
            session.close()

    async with running(config) as services:
        declared, data, noop = await asyncio.to_thread(oversized, services.smtp.port)
        assert declared.startswith("552")
        assert data.startswith("552 5.3.4") and noop.startswith("250")  # the session goes on
        assert services.spool.count_pending() == 0


async def test_per_camera_credentials(per_camera: Daemon) -> None:
    daemon = per_camera

    def deliver(login: str, password: str, to: str) -> object:
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=10) as client:
            client.ehlo("camera")
            try:
                client.login(login, password)
            except smtplib.SMTPAuthenticationError as exc:
                return ("auth", exc.smtp_code)
            client.mail("cam@cam.lan")
            code, _ = client.rcpt(to)
            if code != 250:
                return ("rcpt", code)
            return ("data", send_data(client, sample("swann-nvr-human.eml"))[0])

    assert await in_thread(deliver, "camera-till@monitor.local", "till-secret", "camera-till@monitor.local") == (
        "data", 250)
    assert await in_thread(deliver, "CAMERA-DOOR", "door-secret", "camera-door@monitor.local") == ("data", 250)
    assert await in_thread(deliver, "camera-till", "wrong", "camera-till@monitor.local") == ("auth", 535)
    assert await in_thread(deliver, "camera-till", "till-secret", "camera-door@monitor.local") == ("rcpt", 550)
    await daemon.wait_idle()
    await daemon.add_user("installer", "supervisor")
    token = await daemon.token("installer")
    for _ in range(100):  # the installer's view is written in batches, about a second after the sessions
        status, body = await daemon.api("GET", "/api/cameras", token)
        cameras = {c["name"]: c for c in body["cameras"]}
        if all(c["last_refusal"] for c in cameras.values()):
            break
        await asyncio.sleep(0.05)
    till, door = cameras["Till"], cameras["Door"]
    assert till["last_refusal"]["reply"].startswith("535")  # the installer sees the wrong password
    assert till["last_refusal"]["command"] == "AUTH LOGIN user=camera-till"
    assert door["last_refusal"]["reply"].startswith("550 5.7.1")
    assert door["last_mail_at"] and till["last_mail_at"]
    for camera in (till, door):
        assert not any("secret" in line or "wrong" in line for line in camera["last_transcript"])


async def test_installer_sees_the_last_session_and_the_test_mail(daemon: Daemon) -> None:
    test_mail = (b"Subject: Test E-mail\r\nFrom: cam@cam.lan\r\n\r\n"
                 b"If you receive this e-mail you have successfully set up and tested the e-mail alert from your IPC"
                 b"\r\n")
    assert (await daemon.send(test_mail))["data"][0] == 250
    await daemon.wait_idle()
    await daemon.add_user("installer", "supervisor")
    token = await daemon.token("installer")
    for _ in range(100):  # the transcript is written in a batch after the session has ended
        status, camera = await daemon.api("GET", "/api/cameras/1", token)
        if camera["last_transcript"]:
            break
        await asyncio.sleep(0.05)
    assert status == 200 and camera["name"] == "Front Door"
    assert camera["test_mail_received"] and camera["last_peer"].startswith("127.0.0.1:")
    assert camera["last_refusal"] is None
    lines = camera["last_transcript"]
    assert lines[0].startswith("session from 127.0.0.1:")
    assert "C: EHLO camera" in lines and "C: AUTH LOGIN" in lines
    assert any(line.startswith("C: <message of ") for line in lines)
    assert any(line.startswith("S: 250 2.0.0 Ok: queued as") for line in lines)
    assert not any("secret" in line or "c2VjcmV0" in line for line in lines)  # neither the password nor its base64
    status, _ = await daemon.api("GET", "/api/cameras/1", None)
    assert status == 401
    await daemon.add_user("guard1", "guard")
    status, _ = await daemon.api("GET", "/api/cameras", await daemon.token("guard1"))
    assert status == 403


@pytest.fixture
def rsa_certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=localhost"], check=True, capture_output=True)
    return cert, key


def _tls10_handshake(port: int, cafile: Path) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(cafile))
    context.check_hostname = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # an old camera's TLS 1.0, on purpose
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with smtplib.SMTP_SSL("127.0.0.1", port, timeout=10, context=context) as client:
        return client.sock.version()  # type: ignore[union-attr]


@pytest.mark.parametrize("min_version", ["1.2", "1.0"])
async def test_tls_1_0_only_when_configured(make_config: Callable[..., Config], rsa_certificate: tuple[Path, Path],
                                           min_version: str) -> None:
    cert, key = rsa_certificate
    config = make_config(smtp={"listen": "127.0.0.1:0", "domain": "monitor.local",
                               "tls": {"certificate": str(cert), "key": str(key), "min_version": min_version,
                                       "implicit_tls_listen": "127.0.0.1:0"}})
    async with running(config) as services:
        if min_version == "1.2":
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await asyncio.to_thread(_tls10_handshake, services.smtp.implicit_tls_port, cert)
        else:
            assert await asyncio.to_thread(_tls10_handshake, services.smtp.implicit_tls_port, cert) == "TLSv1"
