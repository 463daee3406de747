"""The SMTP door against guessing: failed logins counted per client address, and shown to the installer.

- A client address with :data:`FAILURE_LIMIT` failed logins within :data:`FAILURE_WINDOW` gets ``454 4.7.0`` to
  AUTH until the oldest of them leaves the window (a sliding window, as the dashboard's login limiter has it).
  454 is temporary: a camera retries later instead of giving up for good, and a camera on another address is
  never affected. A failure is counted *before* the password is checked and taken back on success, so parallel
  sessions cannot run more guesses past the limit than it allows.
- Each failed login is kept for the installer, per (address, name tried): when, how often, and why (a name that
  is no camera's, a wrong password, a camera without a password), bounded in entries and in length. The first
  failure per address per interval is logged at INFO, the throttling once per address per interval at WARNING.

Memory is bounded: at most :data:`MAX_ADDRESSES` addresses are tracked (the least recently failing one is
forgotten first) and :data:`MAX_RECORDS` failure records kept. Runs on the event loop thread only.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

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


def peer_address(peer: Any) -> str:
    """The client's IP address as text (an IPv4-mapped IPv6 address as IPv4), without port or scope."""
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except (TypeError, ValueError, IndexError):
        return str(peer)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


class _Address:
    __slots__ = ("failures", "logged_at", "suppressed", "throttle_logged_at")

    def __init__(self) -> None:
        self.failures: deque[float] = deque()  # monotonic times of failed (or pending) logins, oldest first
        self.logged_at = -float("inf")
        self.throttle_logged_at = -float("inf")
        self.suppressed = 0  # failures not logged since the last line


class LoginGuard:
    def __init__(self, limit: int = FAILURE_LIMIT, window: float = FAILURE_WINDOW,
                 log_interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window  # public so that tests can shorten it on a running server
        self.log_interval = log_interval
        self._clock = clock
        self._addresses: OrderedDict[str, _Address] = OrderedDict()
        self._records: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    def _state(self, address: str, create: bool) -> _Address | None:
        state = self._addresses.get(address)
        if state is not None:
            cutoff = self._clock() - self.window
            while state.failures and state.failures[0] <= cutoff:
                state.failures.popleft()
        elif create:
            state = self._addresses[address] = _Address()
            while len(self._addresses) > MAX_ADDRESSES:
                self._addresses.popitem(last=False)
        return state

    def throttled(self, address: str) -> bool:
        """Whether AUTH from *address* is refused for now (logged once per interval)."""
        state = self._state(address, create=False)
        if state is None or len(state.failures) < self.limit:
            return False
        now = self._clock()
        if now - state.throttle_logged_at >= self.log_interval:
            state.throttle_logged_at = now
            log.warning("SMTP logins from %s refused for now: %d failed within %ds (AUTH answers 454 until the "
                        "oldest is %ds old)", address, len(state.failures), self.window, self.window)
        return True

    def reserve(self, address: str) -> bool:
        """Count a login attempt from *address* as failed before its password is checked; False when the address
        is over the limit (the attempt must then be refused without a check)."""
        if self.throttled(address):
            return False
        state = self._state(address, create=True)
        assert state is not None
        state.failures.append(self._clock())
        self._addresses.move_to_end(address)
        return True

    def succeeded(self, address: str) -> None:
        """The reserved attempt logged in: take it back (the address's other failures stay counted)."""
        state = self._addresses.get(address)
        if state is not None and state.failures:
            state.failures.pop()

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
        state = self._state(address, create=True)
        assert state is not None
        moment = self._clock()
        if moment - state.logged_at < self.log_interval:
            state.suppressed += 1
            return
        more = f" ({state.suppressed} more failed login(s) from there since the last report)" \
            if state.suppressed else ""
        state.logged_at, state.suppressed = moment, 0
        text = REASONS.get(reason, reason).format(name=name, camera=camera[1] if camera else "?")
        log.info("SMTP login from %s failed: %s%s", address, text, more)

    def failures(self) -> list[dict[str, Any]]:
        """The failed logins kept, the most recent first."""
        return [dict(record) for record in reversed(self._records.values())]
