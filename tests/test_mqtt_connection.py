"""Reaching the broker: TLS with a private CA and a client certificate, username and password file, the errors an
installer sees when something is off, and the last will when the vmond process dies."""

from __future__ import annotations

import json
import signal
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import sample, write_config
from daemon_process import DaemonProcess, Notifications
from helpers import wait_until
from mosquitto import Mosquitto, Subscriber, TlsFiles, make_password_file, make_tls_files
from test_mqtt import AVAILABLE, EVENTS, MAIL, events_on, mqtt_daemon, mqtt_settings

from vmond.config import Config

USER, PASSWORD = "vmond-site", "broker secret"

pytestmark = pytest.mark.usefixtures("quick_mqtt")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def secure_broker(tmp_path: Path, tls_files: TlsFiles) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path / "broker", tls=tls_files,
                       password_file=make_password_file(tmp_path / "passwords", USER, PASSWORD))
    server.start()
    yield server
    server.stop()


def station_context(tls: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(tls.ca))
    context.load_cert_chain(str(tls.client_cert), str(tls.client_key))
    return context


def secure_settings(tmp_path: Path, files: TlsFiles, **changes: Any) -> dict[str, Any]:
    password_file = tmp_path / "mqtt-password"
    password_file.write_text(PASSWORD + "\n")  # as `echo secret > file` writes it
    tls_settings = {"enabled": True, "ca_file": str(files.ca), "certificate": str(files.client_cert),
                    "key": str(files.client_key), **changes.pop("tls", {})}
    return {"username": USER, "password_file": str(password_file), "tls": tls_settings, **changes}


async def test_tls_with_client_certificate_and_password(
        make_config: Callable[..., Config], tmp_path: Path, secure_broker: Mosquitto, tls_files: TlsFiles) -> None:
    station = Subscriber(secure_broker.port, [EVENTS, AVAILABLE], tls=station_context(tls_files), username=USER,
                         password=PASSWORD)
    try:
        await station.ready()
        async with mqtt_daemon(make_config, secure_broker.port, **secure_settings(tmp_path, tls_files)) as daemon:
            await daemon.send(sample(MAIL))
            message = (await station.wait_for(lambda: events_on(station), what="events over TLS"))[0]
            assert message["type"] == "new"
            status = daemon.services.mqtt.status()
            assert status["connected"] and status["last_error"] is None
        await station.wait_for(lambda: [m for m in station.on(AVAILABLE) if m.payload == b"stopped"])
    finally:
        station.close()


@pytest.mark.parametrize(("changes", "error"), [
    ({"username": USER, "password": "wrong", "password_file": None}, "not authori"),
    # The system's CAs do not know our private CA. (paho leaves the socket of a failed handshake to the garbage
    # collector, on 1.6 and 2.x alike; Python warns about that, so this case lets the warning pass.)
    pytest.param({"tls": {"ca_file": None}}, "certificate verify failed", marks=[
        pytest.mark.filterwarnings("ignore::ResourceWarning"),
        pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]),
    ({"tls": {"ca_file": None, "insecure": True}}, None),  # explicitly insecure: connects without checks
])
async def test_what_the_installer_is_told(make_config: Callable[..., Config], tmp_path: Path,
                                          secure_broker: Mosquitto, tls_files: TlsFiles,
                                          changes: dict[str, Any], error: str | None) -> None:
    settings = secure_settings(tmp_path, tls_files, **changes)
    async with mqtt_daemon(make_config, secure_broker.port, **settings) as daemon:
        mqtt = daemon.services.mqtt

        await wait_until(lambda: mqtt.connected or mqtt.last_error, timeout=10)
        status = mqtt.status()
        if error is None:
            assert status["connected"] and status["last_error"] is None
        else:
            assert not status["connected"] and error in status["last_error"].lower(), status
            _, health = await daemon.api("GET", "/api/health", None)
            assert health["mqtt"]["last_error"] == status["last_error"]


async def test_unreadable_settings_do_not_stop_the_alarms(make_config: Callable[..., Config], tmp_path: Path,
                                                          tls_files: TlsFiles) -> None:
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate\n")
    settings = {"tls": {"enabled": True, "ca_file": str(tls_files.ca), "certificate": str(broken),
                        "key": str(broken)}}
    async with mqtt_daemon(make_config, 1883, **settings) as daemon:
        await daemon.send(sample(MAIL))
        await daemon.wait_idle()
        mqtt = daemon.services.mqtt
        await wait_until(lambda: (mqtt.status()["outbox_depth"] or 0) >= 1)
        assert not mqtt.connected and mqtt.last_error.startswith("cannot read the MQTT settings")


@pytest.mark.slow
def test_last_will_when_killed_and_stopped_when_stopped(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    notify = Notifications(tmp_path / "notify.sock")
    daemon_process = DaemonProcess(write_config(tmp_path, mqtt=mqtt_settings(broker.port)), notify,
                                   tmp_path / "vmond.log")
    station = Subscriber(broker.port, [AVAILABLE])

    def availability(count: int) -> list[bytes]:
        end = time.monotonic() + 15
        while time.monotonic() < end:
            seen = [m.payload for m in station.on(AVAILABLE)]
            if len(seen) >= count:
                return seen
            time.sleep(0.02)
        seen = [m.payload for m in station.on(AVAILABLE)]
        raise AssertionError(f"availability {seen}; {daemon_process.log.read_text()}")

    try:
        assert station.connected.wait(10)
        daemon_process.start()
        assert availability(1) == [b"online"]
        daemon_process.stop(signal.SIGKILL)  # no goodbye: the broker speaks the last will
        assert availability(2) == [b"online", b"offline"]
        daemon_process.start()
        assert availability(3)[2] == b"online"
        assert daemon_process.stop(signal.SIGTERM) == 0
        assert availability(4)[3] == b"stopped"
        assert "mqtt: connected to" in daemon_process.log.read_text()
    finally:
        if daemon_process.popen is not None and daemon_process.popen.poll() is None:
            daemon_process.popen.kill()
            daemon_process.popen.wait()
        station.close()
        notify.close()
        broker.stop()


def test_password_file_is_read_without_its_newline(tmp_path: Path, make_config: Callable[..., Config]) -> None:
    from vmond.mqtt.client import LinkSettings

    (tmp_path / "pw").write_text("s3cret\n")
    config = make_config(mqtt={**mqtt_settings(1883), "username": "u", "password_file": str(tmp_path / "pw")})
    settings = LinkSettings.from_config(config.mqtt)
    assert settings.password == "s3cret" and settings.tls is None and settings.client_id == "vmond-test-site"
    assert json.dumps(settings.address) == '"127.0.0.1:1883"'
