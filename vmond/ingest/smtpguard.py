"""The SMTP door against guessing: failed logins counted per client address, and shown to the installer.

- A client address with :data:`FAILURE_LIMIT` failed logins within :data:`FAILURE_WINDOW` gets ``454 4.7.0`` to
  AUTH until the oldest of them leaves the window (a sliding window, as the dashboard's login limiter has it).
  454 is temporary: a camera retries later instead of giving up for good, and a camera on another address is
  never affected. A failure is counted *before* the password is checked and taken back on success, so parallel
  sessions cannot run more guesses past the limit than it allows.
- Each failed login is kept for the installer, per (address, name tried): when, how often, and why (a name that
  is no camera's, a wrong password, a camera without a password), bounded in entries and in length. The first
  failure per camera (a wrong or missing password) or per address (a name that is no camera's) per interval is
  logged at INFO; the latter are at most a few per interval in all, since an attacker chooses addresses. The
  throttling is logged once per address per interval at WARNING, also within a budget.

Memory is bounded: at most :data:`MAX_ADDRESSES` addresses are tracked (the least recently failing one is
forgotten first) and :data:`MAX_RECORDS` failure records kept. Runs on the event loop thread only.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from vmond.util.ratelimit import Repeats, SlidingWindows

log = logging.getLogger(__name__)

FAILURE_LIMIT = 10  # failed logins per client address within the window (the dashboard's login allows as many)
FAILURE_WINDOW = 300.0  # seconds
LOG_INTERVAL = 300.0  # seconds between log lines about one address
MAX_ADDRESSES = 1024
MAX_RECORDS = 100

REASONS = {
    "unknown_name": "{name!r} is no camera's login name (with smtp.auth: per-camera a camera logs in with its "
                    "own mail address or the part before the @)",
    "wrong_password": "wrong password for camera {camera!r} (login {name!r})",
    "no_password": "camera {camera!r} has no SMTP password set (login {name!r}); set one on its page",
}


class LoginGuard:
    def __init__(self, limit: int = FAILURE_LIMIT, window: float = FAILURE_WINDOW,
                 log_interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self._failures = SlidingWindows(limit, window, MAX_ADDRESSES, clock)
        # Failures naming a camera are said per camera (as many keys as cameras, never crowded out); the others
        # per address, with a budget in all, since an attacker chooses addresses.
        self._camera_failures_said = Repeats(log_interval, MAX_ADDRESSES, budget=MAX_ADDRESSES)
        self._failures_said = Repeats(log_interval, MAX_ADDRESSES)
        self._throttle_said = Repeats(log_interval, MAX_ADDRESSES)
        self._records: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    # The limit and the window, changeable on a running server (tests shorten them).
    @property
    def limit(self) -> int:
        return self._failures.limit

    @limit.setter
    def limit(self, value: int) -> None:
        self._failures.limit = value

    @property
    def window(self) -> float:
        return self._failures.window

    @window.setter
    def window(self, value: float) -> None:
        self._failures.window = value

    def throttled(self, address: str) -> bool:
        """Whether AUTH from *address* is refused for now (logged once per interval)."""
        if self._failures.wait(address) <= 0:
            return False
        if self._throttle_said.due(address) is not None:
            log.warning("SMTP logins from %s refused for now: %d failed within %ds (AUTH answers 454 until the "
                        "oldest is %ds old)", address, self._failures.count(address), self.window, self.window)
        return True

    def reserve(self, address: str) -> float | None:
        """Count a login attempt from *address* as failed before its password is checked; returns its stamp for
        :meth:`succeeded`, or None when the address is over the limit (refuse it then, without a check)."""
        if self.throttled(address):
            return None
        return self._failures.add(address)

    def succeeded(self, address: str, stamp: float) -> None:
        """The reserved attempt logged in: take it back (the address's other failures stay counted)."""
        self._failures.take_back(address, stamp)

    def failed(self, address: str, name: str, reason: str, camera: tuple[int, str] | None) -> None:
        """Keep a failed login (already counted by :meth:`reserve`) for the installer, and log it if due."""
        now = datetime.now(UTC).isoformat()
        key = (address, name)
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = {"peer": address, "name": name, "first_at": now, "count": 0}
            while len(self._records) > MAX_RECORDS:
                self._records.popitem(last=False)
        self._records.move_to_end(key)
        record.update(last_at=now, count=record["count"] + 1, reason=reason,
                      camera=None if camera is None else {"id": camera[0], "name": camera[1]})
        quiet = (self._failures_said.due(address) if camera is None
                 else self._camera_failures_said.due(camera[0]))
        if quiet is None:
            return
        more = f" ({quiet} more failed login(s) from there since the last report)" if quiet else ""
        text = REASONS.get(reason, reason).format(name=name, camera=camera[1] if camera else "?")
        log.info("SMTP login from %s failed: %s%s", address, text, more)

    def failures(self) -> list[dict[str, Any]]:
        """The failed logins kept, the most recent first."""
        return [dict(record) for record in reversed(self._records.values())]
