"""systemd ``Type=notify`` integration: READY, STATUS, WATCHDOG and STOPPING, via sdnotify.

Without ``NOTIFY_SOCKET`` (a terminal, a test) every call does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

import sdnotify

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self) -> None:
        self._notifier: sdnotify.SystemdNotifier | None = None
        if os.environ.get("NOTIFY_SOCKET"):
            self._notifier = sdnotify.SystemdNotifier()
            if self._notifier.socket is not None:
                # A full notification queue must never stall the event loop; a lost STATUS line is fine.
                self._notifier.socket.setblocking(False)

    def _send(self, state: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(state)

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def reloading(self) -> None:
        self._send("RELOADING=1\nSTATUS=reloading the configuration")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def extend_timeout(self, seconds: float, status: str) -> None:
        self._send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}\nSTATUS={status}")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping")

    def close(self) -> None:
        if self._notifier is not None and self._notifier.socket is not None:
            self._notifier.socket.close()
        self._notifier = None


def extend_start_timeout(seconds: float) -> None:
    """Ask systemd for *seconds* more to start (``EXTEND_TIMEOUT_USEC``), before a long one-time step such as a
    database VACUUM. Any thread; does nothing outside systemd."""
    notifier = Notifier()
    try:
        notifier.extend_timeout(seconds, "compacting the database (one-time VACUUM)")
    finally:
        notifier.close()


def watchdog_interval() -> float | None:
    """Half of systemd's ``WatchdogSec`` (seconds), or None when the watchdog is off or meant for another process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None


async def watchdog_loop(notifier: Notifier, interval: float, probe: Callable[[], Awaitable[object]]) -> None:
    """Send WATCHDOG=1 every *interval* while the loop runs and *probe* (a database round trip) answers in time.

    A stuck writer thread or a blocked loop stops the pings, and systemd restarts the service.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            async with asyncio.timeout(interval):
                await probe()
        except TimeoutError:
            log.error("watchdog: the database did not answer within %.1f s; not telling systemd we are alive", interval)
            continue
        notifier.watchdog()
