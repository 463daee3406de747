"""Limits on password guessing at the dashboard: attempts counted before the password is checked.

Two sliding windows, both keyed by the client's address (an IPv6 client by its /64, which one host can fill
with addresses): attempts per address, and attempts per (address, user name). There is deliberately no limit
per user name alone: that would let anyone lock a user out from anywhere by failing on purpose. A user is
never refused from an address that has not failed.

An attempt is counted when it starts, not when its password check ends, so a hundred guesses sent in parallel
get no further than the limit; a successful login takes its own attempt back and clears its (address, user)
pair, but never the address's other failures. Password checks (scrypt: memory and CPU) run at most
:data:`HASH_CONCURRENCY` at a time.

Memory is bounded in entries and therefore in bytes: each entry holds at most its limit of time stamps, a user
name is cut to :data:`MAX_NAME` characters, and the least recently used entries go first when a table is full.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import OrderedDict
from typing import NamedTuple

MAX_NAME = 64  # characters of a user name that identify it here (no valid user name is longer)
HASH_CONCURRENCY = 2  # password checks at once: scrypt takes 16 MiB and a core's worth of work each
# Entry budgets: about 600 bytes per entry at worst, so under 4 MB in all.
MAX_ADDRESSES = 2048
MAX_PAIRS = 4096


def address_key(address: str) -> str:
    """The unit that is counted: an IPv4 address, or the /64 network of an IPv6 address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class _Windows:
    """Time stamps of recent attempts per key, at most *limit* per key and *capacity* keys (LRU)."""

    def __init__(self, limit: int, window: float, capacity: int) -> None:
        self.limit = limit
        self._window = window
        self._capacity = capacity
        self._stamps: OrderedDict[object, list[float]] = OrderedDict()

    def _recent(self, key: object, now: float) -> list[float]:
        stamps = self._stamps.get(key)
        if stamps is None:
            return []
        cutoff = now - self._window
        while stamps and stamps[0] <= cutoff:
            stamps.pop(0)
        if not stamps:
            del self._stamps[key]
        return stamps

    def wait(self, key: object, now: float) -> float:
        """Seconds until *key* may try again (0: now)."""
        stamps = self._recent(key, now)
        return stamps[0] + self._window - now if len(stamps) >= self.limit else 0.0

    def count(self, key: object, now: float) -> int:
        return len(self._recent(key, now))

    def add(self, key: object, now: float) -> None:
        stamps = self._recent(key, now)
        stamps.append(now)
        del stamps[:-self.limit]  # only the newest *limit* stamps matter to a sliding window of that limit
        self._stamps[key] = stamps
        self._stamps.move_to_end(key)
        while len(self._stamps) > self._capacity:
            self._stamps.popitem(last=False)

    def take_back(self, key: object, stamp: float) -> None:
        stamps = self._stamps.get(key)
        if stamps is not None and stamp in stamps:
            stamps.remove(stamp)
            if not stamps:
                del self._stamps[key]

    def forget(self, key: object) -> None:
        self._stamps.pop(key, None)

    def __len__(self) -> int:
        return len(self._stamps)


class Attempt(NamedTuple):
    """One login attempt: refused (``retry_after`` > 0) or counted and allowed to check its password."""

    address: str
    name: str
    stamp: float
    retry_after: int


class LoginLimiter:
    def __init__(self, per_address: int = 20, per_pair: int = 10, window: float = 300.0,
                 max_addresses: int = MAX_ADDRESSES, max_pairs: int = MAX_PAIRS) -> None:
        self._addresses = _Windows(per_address, window, max_addresses)
        self._pairs = _Windows(per_pair, window, max_pairs)
        self.hash_slots = asyncio.Semaphore(HASH_CONCURRENCY)

    def attempt(self, address: str, username: str) -> Attempt:
        """Count an attempt now, or refuse it: check ``retry_after`` before checking the password."""
        now = time.monotonic()
        key = address_key(address)
        name = username[:MAX_NAME].casefold()
        wait = max(self._addresses.wait(key, now), self._pairs.wait((key, name), now))
        if wait > 0:
            return Attempt(key, name, now, int(wait) + 1)
        self._addresses.add(key, now)
        self._pairs.add((key, name), now)
        return Attempt(key, name, now, 0)

    def succeeded(self, attempt: Attempt) -> None:
        """The password was right: this attempt does not count, nor do the pair's earlier failures."""
        self._addresses.take_back(attempt.address, attempt.stamp)
        self._pairs.forget((attempt.address, attempt.name))

    def delay(self, attempt: Attempt) -> float:
        """Seconds to hold back the answer to a failed login: growing with the recent failures from the address,
        up to two seconds. Slows a guessing script further without refusing anyone (a typo costs nothing)."""
        failures = self._addresses.count(attempt.address, time.monotonic())
        return min(2.0, 0.1 * max(0, failures - 4))

    @property
    def entries(self) -> int:
        return len(self._addresses) + len(self._pairs)
