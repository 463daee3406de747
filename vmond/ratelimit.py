"""Small rate limits: a token bucket, and saying a recurring thing once per interval instead of every time.

A flood (a scanner, a broken client, running out of file descriptors) must not turn into a flood of log lines
or database writes: the log says it once, then how many more there were.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable


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


class Repeats:
    """Decides when a recurring message is said: the first time, then at most once per *interval* per key, with
    the number of times it was kept quiet in between. Remembers at most *max_keys* keys (the oldest go)."""

    def __init__(self, interval: float = 60.0, max_keys: int = 256) -> None:
        self._interval = interval
        self._max_keys = max_keys
        self._seen: OrderedDict[Hashable, list[float]] = OrderedDict()  # key -> [last said, quiet count]

    def due(self, key: Hashable) -> int | None:
        """None: stay quiet this time. A number: say it now; that many were kept quiet since it was last said."""
        now = time.monotonic()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self._interval:
            entry[1] += 1
            return None
        quiet = int(entry[1]) if entry is not None else 0
        self._seen[key] = [now, 0]
        self._seen.move_to_end(key)
        while len(self._seen) > self._max_keys:
            self._seen.popitem(last=False)
        return quiet
