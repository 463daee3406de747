"""Test harness for the central station (issue 18): an edge daemon in the test's loop and a central ``vmond run``
process, on a real mosquitto. (Two daemons cannot share one process: the models bind to one database.)

Use the fixtures with ``from centralsite import central, edge  # noqa: F401`` and the ``quick_mqtt`` fixture; a
test module changes their settings by overriding the ``central_options`` / ``edge_options`` fixtures (conftest).
``edge_process`` is an edge as a ``vmond run`` process instead (its last will fires when it is killed), heartbeating
every :data:`HEARTBEAT` seconds; ``watchful_central`` a central whose ``site_silence`` is :data:`SITE_SILENCE`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Daemon, merge, write_config
from daemon_process import DaemonProcess, process_with_admin
from mosquitto import Mosquitto, Subscriber

from vmond.config import Config
from vmond.daemon import running
from vmond.store.commands import envelope

SECRET = "secret-of-test-site"
HEARTBEAT = 0.5  # seconds between an edge process's status messages (60 s in production)
SITE_SILENCE = "3s"  # a watchful central's central.site_silence
# Reconnects to the broker within a second (paho's wait doubles from 1 s up to 30 s in production).
QUICK_RECONNECT = ("import vmond.central.link, vmond.mqtt.forwarder\n"
                   "vmond.central.link.RECONNECT_DELAY = vmond.mqtt.forwarder.RECONNECT_DELAY = (0.2, 0.5)")


def edge_settings(port: int) -> dict[str, Any]:
    return {"mqtt": {"enabled": True, "host": "127.0.0.1", "port": port, "commands": True,
                     "command_secret": SECRET}}


def write_central_config(directory: Path, port: int, storage: dict[str, Any] | None = None, **central: Any) -> Path:
    """The central's configuration; *storage*: more of its ``storage:`` section (e.g. a PostgreSQL ``database``)."""
    directory.mkdir(exist_ok=True)
    document = {"site": {"id": "central-1", "name": "Central One"},
                "storage": {"data_dir": "data", "min_free_space": 0, **(storage or {})},
                "web": {"listen": "127.0.0.1:0"},
                "central": {"mqtt": {"host": "127.0.0.1", "port": port},
                            "sites": [{"id": "test-site", "command_secret": SECRET}], **central}}
    path = directory / "vmond.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


class Central:
    """The central ``vmond run`` process, its API called off the loop."""

    def __init__(self, process: DaemonProcess, directory: Path) -> None:
        self.process = process
        self.directory = directory  # its configuration; its data in data/
        self.token = process.token()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.process.web_port}"

    async def fetch(self, path: str, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
        """GET *path* as the admin: status, headers and body as they are (an error status too)."""
        def get() -> tuple[int, dict[str, str], bytes]:
            request = urllib.request.Request(f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token}"})
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    return response.status, dict(response.headers), response.read()
            except urllib.error.HTTPError as error:
                return error.code, dict(error.headers), error.read()

        return await asyncio.to_thread(get)

    async def get(self, path: str) -> Any:
        status, body = await asyncio.to_thread(self.process.get, path, self.token)
        assert status == 200, body
        return body

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """*method* on the central's API with the admin's token; (status, JSON body or text)."""
        def send() -> tuple[int, Any]:
            request = urllib.request.Request(f"{self.url}{path}", method=method,
                                             data=None if body is None else json.dumps(body).encode(),
                                             headers={"Authorization": f"Bearer {self.token}",
                                                      "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    status, text = response.status, response.read()
            except urllib.error.HTTPError as error:
                status, text = error.code, error.read()
            try:
                return status, json.loads(text)
            except ValueError:
                return status, text.decode("utf-8", "replace")

        return await asyncio.to_thread(send)

    async def list(self, path: str, key: str) -> list[dict[str, Any]]:
        return list((await self.get(path))[key])

    def restart(self) -> None:
        """Start the process again (after it stopped or was killed), with a new token."""
        self.process.start()
        self.token = self.process.token()


@contextlib.contextmanager
def central_process(directory: Path, port: int, prelude: str | None = None, storage: dict[str, Any] | None = None,
                    **central: Any) -> Iterator[Central]:
    """A central ``vmond run`` process on *directory* (``central:`` settings *central*), stopped afterwards;
    *prelude*: Python run before it starts (e.g. :data:`QUICK_RECONNECT`); *storage*: more of its ``storage:``
    section, e.g. ``{"database": postgres_url}`` for a central on PostgreSQL."""
    with process_with_admin(directory, write_central_config(directory, port, storage, **central)) as process:
        process.prelude = prelude
        process.start()
        yield Central(process, directory)
        assert process.stop() == 0


def _stop_if_running(process: DaemonProcess) -> None:
    """Stop a process a test left running (one it killed is not asked again): it must stop cleanly."""
    if process.popen is not None and process.popen.poll() is None:
        assert process.stop() == 0


@contextlib.contextmanager
def central_nodes(directory: Path, port: int, database: str, names: tuple[str, ...] = ("a", "b"),
                  prelude: str | None = None, **central: Any) -> Iterator[list[Central]]:
    """Central nodes (issue 19) as ``vmond run`` processes sharing the PostgreSQL *database* and the broker on
    *port*: each with a data directory of its own (``central-<name>``) and its own ``central.node``; the
    first one adds the admin user."""
    with contextlib.ExitStack() as stack:
        nodes = []
        for index, name in enumerate(names):
            node_dir = directory / f"central-{name}"
            mqtt = {"host": "127.0.0.1", "port": port}  # one client id base: a survivor adopts by it
            config = write_central_config(node_dir, port, {"database": database},
                                          **{**central, "mqtt": mqtt, "node": name})
            process = stack.enter_context(process_with_admin(node_dir, config, admin=index == 0))
            process.prelude = prelude
            process.start()
            stack.callback(_stop_if_running, process)
            nodes.append(Central(process, node_dir))
        yield nodes


@pytest.fixture
def central(tmp_path: Path, broker: Mosquitto, central_options: dict[str, Any],
            central_storage: dict[str, Any]) -> Iterator[Central]:
    with central_process(tmp_path / "central", broker.port, storage=central_storage, **central_options) as central:
        yield central


@pytest.fixture
def watchful_central(tmp_path: Path, broker: Mosquitto, central_storage: dict[str, Any]) -> Iterator[Central]:
    with central_process(tmp_path / "central", broker.port, QUICK_RECONNECT, storage=central_storage,
                         site_silence=SITE_SILENCE) as central:
        yield central


class EdgeProcess:
    """An edge (``site.id`` test-site) as a ``vmond run`` process: killed, paused and started again at will."""

    def __init__(self, process: DaemonProcess) -> None:
        self.process = process
        process.prelude = f"{QUICK_RECONNECT}\nvmond.mqtt.forwarder.STATUS_INTERVAL = {HEARTBEAT}"

    def start(self) -> None:
        self.process.start()

    def kill(self) -> None:
        """kill -9: no goodbye; the broker publishes its last will."""
        assert self.process.popen is not None
        self.process.popen.kill()
        self.process.popen.wait()

    def pause(self) -> None:
        """SIGSTOP: its connection stays open but it says nothing (until the broker's keepalive gives up)."""
        assert self.process.popen is not None
        self.process.popen.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process.popen is not None
        self.process.popen.send_signal(signal.SIGCONT)


@pytest.fixture
def edge_process(tmp_path: Path, broker: Mosquitto) -> Iterator[EdgeProcess]:
    directory = tmp_path / "edge"
    directory.mkdir()
    with process_with_admin(directory, write_config(directory, **edge_settings(broker.port))) as process:
        edge = EdgeProcess(process)
        edge.start()
        yield edge
        if process.popen is not None and process.popen.poll() is None:
            edge.resume()  # a paused process would not stop
            assert process.stop() == 0


@pytest.fixture
async def edge(make_config: Callable[..., Config], broker: Mosquitto,
               edge_options: dict[str, Any]) -> AsyncIterator[Daemon]:
    async with running(make_config(**merge(edge_settings(broker.port), edge_options))) as services:
        daemon = Daemon(services)
        await daemon.add_user()
        yield daemon


async def poll(read: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Await *read()* again until it gives something true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (found := await read()):
        assert asyncio.get_running_loop().time() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.05)
    return found


async def until_edge_listens(port: int, site: str = "test-site", secret: str = SECRET) -> None:
    """Until the edge's commands subscription is in place (so its session keeps what comes while it is away): a
    harmless signed probe (an unknown event) sent again under the same id until the edge answers it."""
    prefix = f"vmond/{site}/commands"
    link = await Subscriber(port, [f"{prefix}/result"]).ready()
    body = {"id": f"probe-{time.monotonic_ns()}", "site": site, "action": "dismiss", "event_id": 999999,
            "user": "probe", "central": "probe", "at": datetime.now(UTC).isoformat()}
    try:
        deadline = time.monotonic() + 15
        while not any(m for m in link.on(f"{prefix}/result") if body["id"].encode() in m.payload):
            assert time.monotonic() < deadline, "the edge never answered a command"
            link.client.publish(prefix, envelope(body, secret), qos=1)
            with contextlib.suppress(AssertionError):
                await link.wait_for(lambda: any(body["id"].encode() in m.payload
                                                for m in link.on(f"{prefix}/result")), timeout=1.0)
    finally:
        link.close()


# ---------------------------------------------------------------------------------------------------------------
# The nodes of deploy/central/: the shipped configurations, with the test's addresses, ports, files and database

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "central"


def write_node_config(name: str, directory: Path, *, broker_port: int, web_port: int, certificate: Path, key: Path,
                      database: str, password_file: Path | None = None) -> Path:
    """deploy/central/central-<name>.yaml as shipped, but reachable here: the broker on loopback without TLS or
    password, the web server on *web_port* with the test's certificate, the node's data in *directory*, the
    shared PostgreSQL *database* (its password in *password_file*), a command secret of the test's."""
    document = yaml.safe_load((DEPLOY / f"central-{name}.yaml").read_text())
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / "command-secret"
    secret.write_text(SECRET + "\n")
    document["web"].update(listen=f"127.0.0.1:{web_port}", tls={"certificate": str(certificate), "key": str(key)},
                           trusted_proxies=["127.0.0.1/32"])  # the balancer, here on loopback
    storage = document["storage"]
    storage.update(data_dir=str(directory / "data"), min_free_space=0, database=database)
    if password_file is None:
        storage.pop("database_password_file")
    else:
        storage["database_password_file"] = str(password_file)
    central = document["central"]
    mqtt = central["mqtt"]
    for remote in ("username", "password_file"):
        mqtt.pop(remote, None)
    mqtt.update(host="127.0.0.1", port=broker_port, tls={"enabled": False})
    central["command_secret_file"] = str(secret)
    path = directory / f"central-{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path

