"""Test harness for the central station (issue 18): an edge daemon in the test's loop and a central ``vmond run``
process, on a real mosquitto. (Two daemons cannot share one process: the models bind to one database.)

Use the fixtures with ``from centralsite import central, edge  # noqa: F401`` and the ``quick_mqtt`` fixture."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Daemon
from daemon_process import DaemonProcess, process_with_admin
from mosquitto import Mosquitto, Subscriber

from vmond.config import Config
from vmond.daemon import running
from vmond.store.commands import envelope

SECRET = "secret-of-test-site"


def edge_settings(port: int) -> dict[str, Any]:
    return {"mqtt": {"enabled": True, "host": "127.0.0.1", "port": port, "commands": True,
                     "command_secret": SECRET}}


def write_central_config(directory: Path, port: int, **central: Any) -> Path:
    directory.mkdir(exist_ok=True)
    document = {"site": {"id": "central-1", "name": "Central One"},
                "storage": {"data_dir": "data", "min_free_space": 0}, "web": {"listen": "127.0.0.1:0"},
                "central": {"mqtt": {"host": "127.0.0.1", "port": port},
                            "sites": [{"id": "test-site", "command_secret": SECRET}], **central}}
    path = directory / "vmond.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


class Central:
    """The central ``vmond run`` process, its API called off the loop."""

    def __init__(self, process: DaemonProcess) -> None:
        self.process = process
        self.token = process.token()
        self.url = f"http://127.0.0.1:{process.web_port}"

    async def get(self, path: str) -> Any:
        status, body = await asyncio.to_thread(self.process.get, path, self.token)
        assert status == 200, body
        return body

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """*method* on the central's API with the admin's token; (status, JSON body or text)."""
        def send() -> tuple[int, Any]:
            request = urllib.request.Request(f"http://127.0.0.1:{self.process.web_port}{path}", method=method,
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
        self.url = f"http://127.0.0.1:{self.process.web_port}"


@pytest.fixture
def central(tmp_path: Path, broker: Mosquitto) -> Iterator[Central]:
    directory = tmp_path / "central"
    with process_with_admin(directory, write_central_config(directory, broker.port)) as process:
        process.start()
        yield Central(process)
        assert process.stop() == 0


@pytest.fixture
async def edge(make_config: Callable[..., Config], broker: Mosquitto) -> AsyncIterator[Daemon]:
    async with running(make_config(**edge_settings(broker.port))) as services:
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
