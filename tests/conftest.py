"""Shared fixtures: a configuration in tmp_path, the whole daemon running in the test's loop on loopback ports,
and small clients (SMTP via smtplib in a thread, HTTP via aiohttp) that talk to it over real sockets."""

from __future__ import annotations

import asyncio
import copy
import json
import smtplib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import peewee as pw
import pytest
import yaml
from helpers import b64, wait_until
from mosquitto import Mosquitto
from postgres import PASSWORD as PASSWORD_DB
from postgres import PASSWORD_ROLE, PostgresCluster, running_cluster

from vmond.config import Config, load_config
from vmond.daemon import running
from vmond.mqtt import forwarder
from vmond.services import Services
from vmond.store.users import create_user
from vmond.util import auth

MAIL_DIR = Path(__file__).parent / "data" / "camera-mail"
EXPECTED = json.loads((MAIL_DIR / "expected.json").read_text())
PASSWORD = "correct horse battery"  # the test users' (postgres.PASSWORD is the database role's)

BASE_CONFIG: dict[str, Any] = {
    "site": {"id": "test-site", "name": "Test Site"},
    "storage": {"data_dir": "data", "min_free_space": 0},
    "smtp": {"listen": "127.0.0.1:0", "domain": "monitor.local"},
    "web": {"listen": "127.0.0.1:0"},
    "events": {"coalesce_window": "0s"},
    "accounts": [
        {
            "name": "Test Customer",
            "address": "1 Test Street",
            "contacts": [{"name": "Jane Keyholder", "phone": "+15550100", "role": "keyholder"}],
            "cameras": [
                {"name": "Front Door", "smtp_address": "camera-front"},
                {"name": "Back Yard", "smtp_address": "camera-back"},
            ],
        }
    ],
}


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


def write_config(directory: Path, **overrides: Any) -> Path:
    path = directory / "vmond.yaml"
    path.write_text(yaml.safe_dump(merge(BASE_CONFIG, overrides), sort_keys=False))
    return path


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    def make(**overrides: Any) -> Config:
        return load_config(write_config(tmp_path, **overrides))

    return make


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config()


class Daemon:
    """The running services plus helpers to talk to them like a camera or a browser would."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.config = services.config
        self.smtp_port = services.smtp.port if services.smtp is not None else 0  # a central has no SMTP door
        self.web_port = services.web_port
        self.url = f"http://127.0.0.1:{self.web_port}"

    async def send(self, raw: bytes, to: str = "camera-front@monitor.local", *, login: bool = True,
                   helo: bool = False, mail_from: str = "camera@cam.lan") -> dict[str, Any]:
        """Deliver *raw* like a camera (AUTH LOGIN over plain TCP); returns the replies seen."""
        return await asyncio.to_thread(smtp_send, self.smtp_port, raw, to, login=login, helo=helo,
                                       mail_from=mail_from)

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until the pipeline has turned everything spooled into events, and a burst's pictures have their
        thumbnails."""
        spool, pipeline = self.services.spool, self.services.pipeline
        deadline = asyncio.get_running_loop().time() + timeout
        while await asyncio.to_thread(spool.count_pending) or pipeline.pictures_pending:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("the pipeline did not drain the spool in time")
            await asyncio.sleep(0.02)

    async def add_user(self, username: str = "admin", role: str = "admin", password: str = PASSWORD) -> None:
        encoded = await asyncio.to_thread(auth.hash_password, password)
        await self.services.db.write(create_user, username, encoded, role)

    async def token(self, username: str = "admin", password: str = PASSWORD) -> str:
        async with aiohttp.ClientSession() as http, http.post(
            f"{self.url}/api/token", json={"username": username, "password": password}
        ) as response:
            assert response.status == 200, await response.text()
            return (await response.json())["access_token"]

    async def api(self, method: str, path: str, token: str | None, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as http, http.request(
            method, f"{self.url}{path}", headers=headers, **kwargs
        ) as response:
            body = await response.json() if response.content_type == "application/json" else await response.text()
            return response.status, body


def smtp_send(port: int, raw: bytes, to: str, *, login: bool = True, helo: bool = False,
              mail_from: str = "camera@cam.lan") -> dict[str, Any]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        if helo:
            client.helo("camera")
        else:
            client.ehlo("camera")
        if login:
            # Like Dahua and Reolink firmware: AUTH LOGIN over plain TCP, also after HELO.
            code, _ = client.docmd("AUTH", "LOGIN")
            assert code == 334
            client.docmd(b64("camera"))
            code, text = client.docmd(b64("secret"))
            assert code == 235, text
        code, text = client.mail(mail_from)
        assert code == 250, text
        rcpt_code, rcpt_text = client.rcpt(to)
        if rcpt_code != 250:
            return {"rcpt": (rcpt_code, rcpt_text.decode())}
        code, text = send_data(client, raw)
        return {"rcpt": (rcpt_code, rcpt_text.decode()), "data": (code, text.decode())}


def send_data(client: smtplib.SMTP, raw: bytes) -> tuple[int, bytes]:
    """DATA as RFC 5321 has it: dot-stuffing after CRLF only. (smtplib also stuffs after a bare LF, which a
    camera sending bare-LF mail does not do, and which no server undoes.)"""
    code, text = client.docmd("DATA")
    assert code == 354, text
    stuffed = (b"\r\n" + raw).replace(b"\r\n.", b"\r\n..")[2:]
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    client.send(stuffed + b".\r\n")
    return client.getreply()


@pytest.fixture
async def daemon(config: Config) -> AsyncIterator[Daemon]:
    async with running(config) as services:
        yield Daemon(services)


@pytest.fixture
async def guard(daemon: Daemon) -> str:
    """A bearer token of ``guard1``, a user with the guard role."""
    await daemon.add_user("guard1", "guard")
    return await daemon.token("guard1")


def sample(name: str) -> bytes:
    return (MAIL_DIR / name).read_bytes()


def distinct(raw: bytes, n: int) -> bytes:
    """The same camera mail as a new alarm (real cameras' mails differ in time stamps and pictures): vmond takes
    a byte-identical mail from the same camera for a resend of the first, not a new alarm."""
    newline = b"\r\n" if b"\r\n" in raw[:2000] else b"\n"
    return b"X-Test-Sequence: " + str(n).encode() + newline + raw


def pytest_configure(config: pytest.Config) -> None:
    from vmond.ingest.smtp import quiet_aiosmtpd_logging

    quiet_aiosmtpd_logging()  # as the daemon does: aiosmtpd's per-command chatter hides what matters


@pytest.fixture
async def per_camera(make_config: Callable[..., Config]) -> AsyncIterator[Daemon]:
    """A daemon with ``smtp.auth: per-camera`` and two cameras with passwords in the file."""
    config = make_config(smtp={"listen": "127.0.0.1:0", "domain": "monitor.local", "auth": "per-camera"},
                         accounts=[{"name": "Shop", "cameras": [
                             {"name": "Till", "smtp_address": "camera-till", "smtp_password": "till-secret"},
                             {"name": "Door", "smtp_address": "camera-door", "smtp_password": "door-secret"}]}])
    async with running(config) as services:
        yield Daemon(services)


class PasswordChecks:
    """Wraps ``auth.verify_password`` (run on threads) to see how many checks ran at once."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.most = 0
        self._running = 0
        self._lock = threading.Lock()
        self._verify = auth.verify_password

    def __call__(self, password: str, encoded: str) -> bool:
        with self._lock:
            self._running += 1
            self.most = max(self.most, self._running)
        try:
            time.sleep(self.delay)
            return self._verify(password, encoded)
        finally:
            with self._lock:
                self._running -= 1


@pytest.fixture
def password_checks(monkeypatch: pytest.MonkeyPatch) -> PasswordChecks:
    probe = PasswordChecks()
    monkeypatch.setattr(auth, "verify_password", probe)
    return probe


@pytest.fixture
def quick_mqtt(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MQTT forwarder reconnects and polls faster than in production, so outages in tests take a second,
    not half a minute."""
    monkeypatch.setattr(forwarder, "RECONNECT_DELAY", (0.2, 0.5))
    monkeypatch.setattr(forwarder, "POLL_INTERVAL", 0.1)


@pytest.fixture
def central_options() -> dict[str, Any]:
    """More of the central station's ``central:`` section for centralsite's ``central`` (a module overrides it)."""
    return {}


@pytest.fixture
def edge_options() -> dict[str, Any]:
    """More of the edge's configuration for centralsite's ``edge`` (a test module overrides this fixture)."""
    return {}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto on a free loopback port, for the tests of the MQTT forwarder."""
    server = Mosquitto(tmp_path / "broker")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One throw-away PostgreSQL cluster for the whole session (started at the first test that asks for it)."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_db(postgres: PostgresCluster) -> Iterator[str]:
    """A fresh, empty database in the session's cluster, owned by the ``vmond`` role; dropped afterwards."""
    name = postgres.create_database()
    yield name
    postgres.drop_database(name)


@pytest.fixture
def postgres_url(postgres: PostgresCluster, postgres_db: str) -> str:
    """``postgresql://vmond@127.0.0.1:PORT/<fresh database>``: the ``vmond`` role needs no password on loopback."""
    return postgres.url(postgres_db)


@pytest.fixture
def postgres_password_url(postgres: PostgresCluster, postgres_db: str, tmp_path: Path) -> tuple[str, Path]:
    """The fresh database as a role that must give its password, and a file holding that password (for
    ``storage.database_password_file``)."""
    password_file = tmp_path / "database-password"
    password_file.write_text(PASSWORD_DB + "\n")
    password_file.chmod(0o600)
    return postgres.url(postgres_db, user=PASSWORD_ROLE), password_file


@pytest.fixture(params=["sqlite", "postgresql"])
def store_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[pw.Database]:
    """The store's database on each engine in turn: SQLite in tmp_path, then a fresh PostgreSQL database (models
    bound, schema migrated), for store tests that must hold on both."""
    from vmond.store.db import open_postgresql, open_sqlite

    database = (open_postgresql(request.getfixturevalue("postgres_url")) if request.param == "postgresql"
                else open_sqlite(tmp_path / "vmond.db"))
    yield database
    database.close()


@pytest.fixture
def central_storage() -> dict[str, Any]:
    """More of the central's ``storage:`` section for centralsite's ``central`` (a module on PostgreSQL overrides
    it with ``{"database": postgres_url}``)."""
    return {}


def media_on_disk(root: Path) -> int:
    """Bytes of the finished media files under *root* (names starting with a dot are writes in progress)."""
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file() and not path.name.startswith("."))


async def media_counted(services: Services, timeout: float = 10.0) -> int:
    """The media store's own count, once it has measured the directory."""
    await wait_until(lambda: services.media.usage.measured, timeout, "the media directory measured")
    return services.media.usage.bytes
