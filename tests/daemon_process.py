"""``vmond run`` as a real process for the tests: start it, learn its ports from READY=1, stop or kill it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import PASSWORD


class Notifications:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.seen: list[str] = []

    def wait_for(self, prefix: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.seen.append(message)
            if message.startswith(prefix) or f"\n{prefix}" in message:
                return message
        raise AssertionError(f"no {prefix!r} from vmond; saw {self.seen}")

    def close(self) -> None:
        self.sock.close()


class DaemonProcess:
    """``vmond run`` as a child process (``popen`` once started); the daemon in the test's own loop is
    :class:`conftest.Daemon`."""

    def __init__(self, config: Path, notify: Notifications, log: Path) -> None:
        self.config = config
        self.notify = notify
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None
        self.smtp_port = self.web_port = 0
        # Python statements run before vmond's own start, e.g. to shorten a module's interval for a test.
        self.prelude: str | None = None

    def start(self, watchdog_usec: int | None = None, **extra_env: str) -> None:
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path), **extra_env}
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        with self.log.open("ab") as log:
            start = (["-m", "vmond"] if self.prelude is None else
                     ["-c", f"import sys\n{self.prelude}\nfrom vmond.cli import main\nsys.exit(main(sys.argv[1:]))"])
            self.popen = subprocess.Popen([sys.executable, *start, "run", "--config", str(self.config)],
                                            env=env, stdout=log, stderr=subprocess.STDOUT)
        ready = self.notify.wait_for("READY=1")
        ports = re.search(r"(?:SMTP on port (\d+), )?dashboard on port (\d+)", ready)  # a central has no SMTP
        assert ports, ready
        self.smtp_port, self.web_port = int(ports.group(1) or 0), int(ports.group(2))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.popen is not None
        self.popen.send_signal(sig)
        return self.popen.wait(timeout)

    def get(self, path: str, token: str | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.web_port}{path}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())

    def wait_exit(self, timeout: float = 20.0) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout)

    def token(self) -> str:
        request = urllib.request.Request(f"http://127.0.0.1:{self.web_port}/api/token", method="POST",
                                         data=json.dumps({"username": "admin", "password": PASSWORD}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["access_token"]


@contextmanager
def process_with_admin(tmp_path: Path, config: Path, admin: bool = True) -> Iterator[DaemonProcess]:
    """A not yet started ``vmond run`` subprocess on *config* with an admin user (*admin* False: its database
    has one already, e.g. a second central node's); killed afterwards if still up."""
    if admin:
        subprocess.run([sys.executable, "-m", "vmond", "user", "add", "admin", "--role", "admin",
                        "--password-stdin", "--config", str(config)], input=f"{PASSWORD}\n".encode(), check=True,
                       capture_output=True)
    notify = Notifications(tmp_path / "notify.sock")
    process = DaemonProcess(config, notify, tmp_path / "vmond.log")
    try:
        yield process
    finally:
        if process.popen is not None and process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait()
        notify.close()
