"""Small rate limits: a token bucket, sliding windows of recent failures, and saying a recurring thing once per
interval instead of every time; and the client address they are counted by.

A flood (a scanner, a broken client, running out of file descriptors) must not turn into a flood of log lines
or database writes: the log says it once, then how many more there were. Everything here is bounded in
entries, so in memory, whatever it is fed. Used on the event loop thread only.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable


def peer_ip(peer: object) -> str:
    """The client's IP address as text, from a ``(host, port, ...)`` peer or a host string: an IPv4-mapped IPv6
    address as IPv4, without a scope id. Anything else is returned as text, cut to 64 characters."""
    host = peer[0] if isinstance(peer, tuple) and peer else peer
    try:
        address = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return str(host)[:64]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def ipv6_network(address: str) -> str | None:
    """The /64 an IPv6 address belongs to (one host may use any address in it), or None for anything else."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return str(ipaddress.IPv6Network((ip, 64), strict=False)) if isinstance(ip, ipaddress.IPv6Address) else None


class TokenBucket:
    """*rate* tokens a second, at most *burst* saved up."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate, self._burst = rate, burst
        self._tokens, self._stamp = float(burst), time.monotonic()

    def take(self, count: float = 1.0) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens < count:
            return False
        self._tokens -= count
        return True


class SlidingWindows:
    """Time stamps of recent events (failed logins) per key: at most *limit* per key, which is all a sliding
    window of that limit needs, and at most *capacity* keys, the least recently used going first.

    ``limit`` and ``window`` may be changed on a running instance (tests shorten them)."""

    def __init__(self, limit: int, window: float, capacity: int, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.limit = limit
        self.window = window
        self._capacity = capacity
        self._clock = clock
        self._stamps: OrderedDict[Hashable, list[float]] = OrderedDict()

    def _recent(self, key: Hashable) -> list[float]:
        stamps = self._stamps.get(key)
        if stamps is None:
            return []
        cutoff = self._clock() - self.window
        while stamps and stamps[0] <= cutoff:
            stamps.pop(0)
        if not stamps:
            del self._stamps[key]
        return stamps

    def wait(self, key: Hashable) -> float:
        """Seconds until *key* is under its limit again (0: it is now)."""
        stamps = self._recent(key)
        return stamps[0] + self.window - self._clock() if len(stamps) >= self.limit else 0.0

    def count(self, key: Hashable) -> int:
        return len(self._recent(key))

    def add(self, key: Hashable) -> float:
        """Count one for *key* now; returns its time stamp (for :meth:`take_back`)."""
        stamp = self._clock()
        stamps = self._recent(key)
        stamps.append(stamp)
        del stamps[:-self.limit]
        self._stamps[key] = stamps
        self._stamps.move_to_end(key)
        while len(self._stamps) > self._capacity:
            self._stamps.popitem(last=False)
        return stamp

    def take_back(self, key: Hashable, stamp: float) -> None:
        stamps = self._stamps.get(key)
        if stamps is not None and stamp in stamps:
            stamps.remove(stamp)
            if not stamps:
                del self._stamps[key]

    def forget(self, key: Hashable) -> None:
        self._stamps.pop(key, None)

    def __len__(self) -> int:
        return len(self._stamps)


class Repeats:
    """Decides when a recurring message is said: the first time, then at most once per *interval* per key, with
    the number of times it was kept quiet in between. Remembers at most *max_keys* keys (the oldest go, with
    their counts), and says at most *budget* messages per interval in all: keys an attacker chooses (a client
    address, a host name) cannot multiply the lines."""

    def __init__(self, interval: float = 60.0, max_keys: int = 256, budget: int = 10) -> None:
        self._interval = interval
        self._max_keys = max_keys
        self._budget = budget
        self._seen: OrderedDict[Hashable, list[float]] = OrderedDict()  # key -> [last said, quiet count]
        self._said: deque[float] = deque()  # when messages were said, within the last interval

    def due(self, key: Hashable) -> int | None:
        """None: stay quiet this time. A number: say it now; that many were kept quiet since it was last said."""
        now = time.monotonic()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self._interval:
            entry[1] += 1
            return None
        while self._said and self._said[0] <= now - self._interval:
            self._said.popleft()
        if len(self._said) >= self._budget:
            if entry is None:
                entry = self._remember(key, [-math.inf, 0])
            entry[1] += 1
            return None
        quiet = int(entry[1]) if entry is not None else 0
        self._said.append(now)
        self._remember(key, [now, 0])
        return quiet

    def _remember(self, key: Hashable, entry: list[float]) -> list[float]:
        self._seen[key] = entry
        self._seen.move_to_end(key)
        while len(self._seen) > self._max_keys:
            self._seen.popitem(last=False)
        return entry
