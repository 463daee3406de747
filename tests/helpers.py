"""Small helpers every kind of test uses: waiting for a condition with a deadline, a free loopback port, the base64
of an SMTP AUTH argument, the ``vmond`` command. A leaf module (conftest.py and the other helper modules import it,
it imports none of them), so that each helper is defined once."""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
import sys
from collections.abc import Callable


async def wait_until(condition: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """Poll *condition* until it is true; fail after *timeout* seconds. The way to wait in a test: never a fixed
    sleep before an assertion."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or condition}")
        await asyncio.sleep(0.02)


def free_port() -> int:
    """A loopback TCP port nothing listens on (a connection to it is refused until someone binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def b64(data: str | bytes) -> str:
    """An SMTP AUTH argument: *data* (text as UTF-8) in base64, on one line."""
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def run_cli(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The ``vmond`` command of this tree with *args*, as an installer runs it: its output as text."""
    return subprocess.run([sys.executable, "-m", "vmond", *args], input=stdin, capture_output=True, text=True,
                          timeout=60, env=env)
