"""Test helpers for MQTT: Debian's mosquitto on a free loopback port, TLS files made with the openssl CLI, a
password file made with mosquitto_passwd, and a paho subscriber that collects what it receives."""

from __future__ import annotations

import asyncio
import getpass
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from helpers import free_port

from vmond.mqtt.client import paho_client

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
READY = "test/ready"  # the subscriber's own marker: subscribed once it comes back


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(directory: Path, names: tuple[str, ...] = ()) -> TlsFiles:
    """A self-signed CA, a server certificate for 127.0.0.1/localhost (and the DNS *names*) and a client
    certificate, both from it."""
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=vmond test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    server_names = "".join(f",DNS:{name}" for name in names)
    for name, extensions in (("server", f"subjectAltName=IP:127.0.0.1,DNS:localhost{server_names}\n"
                                        "extendedKeyUsage=serverAuth"),
                             ("client", "extendedKeyUsage=clientAuth")):
        (directory / f"{name}.ext").write_text(extensions + "\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=vmond test {name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    return TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key",
                    directory / "client.pem", directory / "client.key")


def make_password_file(path: Path, username: str, password: str) -> Path:
    subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", str(path), username, password], check=True, capture_output=True)
    return path


class Mosquitto:
    """One broker process; ``stop()`` and ``start()`` again keep the port (for outage tests)."""

    def __init__(self, directory: Path, *, tls: TlsFiles | None = None, password_file: Path | None = None,
                 persistence: bool = False) -> None:
        self.directory = directory
        self.port = free_port()
        self.tls = tls
        self.password_file = password_file
        self.persistence = persistence
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.conf = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"

    def _config(self) -> str:
        lines = [f"listener {self.port} 127.0.0.1",
                 f"allow_anonymous {'false' if self.password_file else 'true'}",
                 # as root, mosquitto would switch to the "mosquitto" user, which cannot read tmp_path
                 f"user {getpass.getuser()}",
                 "log_dest stderr", "log_type error", "log_type warning", "log_type notice",
                 "log_type information", "connection_messages true"]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.directory}/", "autosave_interval 1"]
        else:
            lines.append("persistence false")
        if self.password_file:
            lines.append(f"password_file {self.password_file}")
        if self.tls:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.server_cert}", f"keyfile {self.tls.server_key}",
                      "require_certificate true"]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        self.conf.write_text(self._config())
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        try:
            wait_listening(self.port)
        except OSError:
            self.stop()
            raise AssertionError(f"mosquitto did not start: {self.log.read_text()}") from None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)


class Received(NamedTuple):
    topic: str
    payload: bytes
    retain: bool
    at: float


class Subscriber:
    """A paho client (QoS 1) that subscribes to *topics* on every connect and collects what arrives."""

    def __init__(self, port: int, topics: list[str], *, client_id: str = "", clean_session: bool = True,
                 tls: ssl.SSLContext | None = None, username: str | None = None, password: str | None = None
                 ) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._topics = topics
        self.connected = threading.Event()
        self.client = paho_client(client_id or f"test-{os.getpid()}-{id(self)}", clean_session=clean_session)
        if tls is not None:
            self.client.tls_set_context(tls)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, properties: Any = None) -> None:
        for topic in [*self._topics, READY]:
            client.subscribe(topic, qos=1)
        # a marker through the broker: once it comes back, the subscriptions are in place
        client.publish(READY, b"", qos=1)

    def _on_disconnect(self, client: Any, *args: Any) -> None:
        self.connected.clear()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.topic == READY:
            self.connected.set()
            return
        with self._lock:
            self.messages.append(Received(message.topic, bytes(message.payload), bool(message.retain),
                                          time.monotonic()))

    async def ready(self, timeout: float = 10.0) -> Subscriber:
        """Wait until connected with the subscriptions active."""
        if not await asyncio.to_thread(self.connected.wait, timeout):
            raise AssertionError("the test subscriber did not connect")
        return self

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    async def wait_for(self, check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        """Poll *check* until it returns something truthy; returns that."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                with self._lock:
                    seen = [(m.topic, m.payload[:80]) for m in self.messages]
                raise AssertionError(f"timed out waiting for {what or check}; received {seen}")
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
