"""Camera mail over real SMTP on loopback: what is accepted becomes an event; what is not gets the right reply."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import EXPECTED, Daemon, sample, send_data

from vmond.config import Config
from vmond.daemon import running
from vmond.store.events import list_events
from vmond.util import fsutil


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_sample_mail_becomes_an_event(daemon: Daemon, name: str) -> None:
    replies = await daemon.send(sample(name))
    assert replies["data"][0] == 250, replies
    await daemon.wait_idle()
    events = await daemon.services.db.read(list_events, "monitor.local", "all", 10, True)
    assert len(events) == 1
    event = events[0]
    expected = EXPECTED[name]
    if "subject" in expected:
        assert event["subject"] == expected["subject"]
    assert len(event["images"]) == expected["images"]
    assert event["camera"]["smtp_address"] == "camera-front@monitor.local"
    assert event["account"]["name"] == "Test Customer"
    assert event["status"] == "active"
    # Every stored picture is on disk where the event says, with its thumbnail.
    for image in event["images"]:
        assert image["width"] > 0 and image["height"] > 0


async def test_unknown_recipient_is_refused_and_remembered(daemon: Daemon) -> None:
    replies = await daemon.send(sample("reolink-person.eml"), to="camera-typo@monitor.local")
    code, text = replies["rcpt"]
    assert code == 550
    assert text.startswith("5.1.1") and "camera-typo@monitor.local" in text
    await daemon.add_user("super", "supervisor")
    token = await daemon.token("super")
    status, body = await daemon.api("GET", "/api/smtp/refusals", token)
    assert status == 200
    refusal = body["refusals"][0]
    assert refusal["recipient"] == "camera-typo@monitor.local"
    assert refusal["reply"].startswith("550 5.1.1")
    assert refusal["peer"].startswith("127.0.0.1:")
    assert await daemon.services.db.read(list_events, "monitor.local", "all", 10, True) == []


async def test_wrong_domain_is_refused(daemon: Daemon) -> None:
    replies = await daemon.send(sample("reolink-person.eml"), to="camera-front@elsewhere.example")
    assert replies["rcpt"][0] == 550


async def test_spool_failure_answers_451_and_stores_nothing(daemon: Daemon, monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(fsutil, "fsync_file", broken_fsync)
    replies = await daemon.send(sample("amcrest-tamper.eml"))
    code, text = replies["data"]
    assert code == 451, replies
    assert text.startswith("4.3.0")
    spool = daemon.services.spool
    assert list(spool.new.iterdir()) == [] and list(spool.tmp.iterdir()) == []
    monkeypatch.undo()
    # The camera retries, and now it works.
    replies = await daemon.send(sample("amcrest-tamper.eml"))
    assert replies["data"][0] == 250
    await daemon.wait_idle()
    assert len(await daemon.services.db.read(list_events, "monitor.local", "all", 10, True)) == 1


async def test_auth_login_after_helo_is_accepted(daemon: Daemon) -> None:
    replies = await daemon.send(sample("swann-nvr-human.eml"), helo=True)
    assert replies["data"][0] == 250


async def test_null_sender_is_accepted(daemon: Daemon) -> None:
    replies = await daemon.send(sample("amcrest-tamper.eml"), mail_from="<>", login=False)
    assert replies["data"][0] == 250


async def test_low_disk_answers_452(make_config: Callable[..., Config]) -> None:
    config = make_config(storage={"data_dir": "data", "min_free_space": "1000TB"})
    async with running(config) as services:
        replies = await Daemon(services).send(sample("reolink-person.eml"))
        code, text = replies["data"]
        assert code == 452 and text.startswith("4.3.1")
        assert services.spool.count_pending() == 0


async def test_oversized_message_gets_552(make_config: Callable[..., Config]) -> None:
    config = make_config(smtp={"listen": "127.0.0.1:0", "domain": "monitor.local", "max_message_size": "100KB"})
    async with running(config) as services:
        replies = await Daemon(services).send(sample("amcrest-tamper.eml"))
        assert replies["data"][0] == 552
        assert services.spool.count_pending() == 0


async def test_connections_beyond_the_limit_get_421(make_config: Callable[..., Config]) -> None:
    config = make_config(smtp={"listen": "127.0.0.1:0", "domain": "monitor.local", "max_connections": 2})
    async with running(config) as services:
        port = services.smtp.port

        def greet() -> tuple[socket.socket, bytes]:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            return sock, sock.recv(200)

        held = [await asyncio.to_thread(greet) for _ in range(2)]
        assert all(banner.startswith(b"220 ") for _, banner in held)
        extra, banner = await asyncio.to_thread(greet)
        assert banner.startswith(b"421 4.7.0")
        for sock, _ in [*held, (extra, b"")]:
            sock.close()


async def test_networks_outside_allow_list_get_554(make_config: Callable[..., Config]) -> None:
    config = make_config(smtp={"listen": "127.0.0.1:0", "domain": "monitor.local", "allow_networks": ["10.0.0.0/8"]})
    async with running(config) as services:
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            await asyncio.to_thread(smtplib.SMTP, "127.0.0.1", services.smtp.port, timeout=5)
        assert refused.value.smtp_code == 554


@pytest.fixture
def ec_certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    return cert, key


async def test_starttls_and_implicit_tls(make_config: Callable[..., Config], ec_certificate: tuple[Path, Path]) -> None:
    cert, key = ec_certificate
    config = make_config(smtp={"listen": "127.0.0.1:0", "domain": "monitor.local",
                               "tls": {"certificate": str(cert), "key": str(key),
                                       "implicit_tls_listen": "127.0.0.1:0"}})
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    raw = sample("swann-nvr-human.eml")

    def starttls(port: int) -> int:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("camera")
            assert client.has_extn("starttls")
            client.starttls(context=context)
            client.ehlo("camera")
            assert not client.has_extn("starttls") and client.has_extn("auth")
            client.login("camera", "secret")
            client.mail("cam@cam.lan")
            client.rcpt("camera-front@monitor.local")
            return send_data(client, raw)[0]

    def implicit(port: int) -> int:
        with smtplib.SMTP_SSL("127.0.0.1", port, timeout=10, context=context) as client:
            client.ehlo("camera")
            assert not client.has_extn("starttls")
            client.login("camera", "secret")
            client.mail("cam@cam.lan")
            client.rcpt("camera-back@monitor.local")
            return send_data(client, raw)[0]

    async with running(config) as services:
        assert await asyncio.to_thread(starttls, services.smtp.port) == 250
        assert await asyncio.to_thread(implicit, services.smtp.implicit_tls_port) == 250
        daemon = Daemon(services)
        await daemon.wait_idle()
        events = await services.db.read(list_events, "monitor.local", "all", 10, True)
        assert sorted(e["camera"]["name"] for e in events) == ["Back Yard", "Front Door"]
