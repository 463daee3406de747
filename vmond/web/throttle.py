"""Limits on password guessing at the dashboard: attempts counted before the password is checked.

Sliding windows keyed by the client's address: attempts per address, and attempts per (address, user name).
There is deliberately no limit per user name alone: that would let anyone lock a user out from anywhere by
failing on purpose. A user is never refused from an address that has not failed. One host on IPv6 may use any
address of its /64, so a /64 as a whole has a limit too, ten times an address's: an attacker cycling through
addresses gets no further than that, and hosts sharing a LAN's /64 are affected only by a flood that large.

An attempt is counted when it starts, not when its password check ends, so a hundred guesses sent in parallel
get no further than the limit; a successful login takes its own attempt back and clears its (address, user)
pair, but never the address's other failures. Password checks (scrypt: memory and CPU) run at most
:data:`HASH_CONCURRENCY` at a time.

Memory is bounded in entries and therefore in bytes: each entry holds at most its limit of time stamps, a user
name is cut to :data:`MAX_NAME` characters, and the least recently used entries go first when a table is full.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

from vmond.util.ratelimit import SlidingWindows, ipv6_network, peer_ip

MAX_NAME = 64  # characters of a user name that identify it here (no valid user name is longer)
HASH_CONCURRENCY = 2  # password checks at once: scrypt takes 16 MiB and a core's worth of work each
# Entry budgets: about 600 bytes per entry at worst, so under 4 MB in all.
MAX_ADDRESSES = 2048
MAX_PAIRS = 4096
MAX_NETWORKS = 512


class Attempt(NamedTuple):
    """One login attempt: refused (``retry_after`` > 0) or counted and allowed to check its password."""

    address: str
    name: str
    stamps: tuple[float, float, float]  # in the address, pair and network windows
    retry_after: int


class LoginLimiter:
    def __init__(self, per_address: int = 20, per_pair: int = 10, window: float = 300.0) -> None:
        self._addresses = SlidingWindows(per_address, window, MAX_ADDRESSES)
        self._pairs = SlidingWindows(per_pair, window, MAX_PAIRS)
        self._networks = SlidingWindows(per_address * 10, window, MAX_NETWORKS)
        self.hash_slots = asyncio.Semaphore(HASH_CONCURRENCY)

    def attempt(self, address: str, username: str) -> Attempt:
        """Count an attempt now, or refuse it: check ``retry_after`` before checking the password."""
        ip = peer_ip(address)
        name = username[:MAX_NAME].casefold()
        network = ipv6_network(ip)
        wait = max(self._addresses.wait(ip), self._pairs.wait((ip, name)),
                   self._networks.wait(network) if network else 0.0)
        if wait > 0:
            return Attempt(ip, name, (0.0, 0.0, 0.0), int(wait) + 1)
        stamps = (self._addresses.add(ip), self._pairs.add((ip, name)),
                  self._networks.add(network) if network else 0.0)
        return Attempt(ip, name, stamps, 0)

    def succeeded(self, attempt: Attempt) -> None:
        """The password was right: this attempt does not count, nor do the pair's earlier failures."""
        self._addresses.take_back(attempt.address, attempt.stamps[0])
        self._pairs.forget((attempt.address, attempt.name))
        if network := ipv6_network(attempt.address):
            self._networks.take_back(network, attempt.stamps[2])

    def delay(self, attempt: Attempt) -> float:
        """Seconds to hold back the answer to a failed login: growing with the recent failures from the address,
        up to two seconds. Slows a guessing script further without refusing anyone (a typo costs nothing)."""
        return min(2.0, 0.1 * max(0, self._addresses.count(attempt.address) - 4))

    @property
    def entries(self) -> int:
        return len(self._addresses) + len(self._pairs) + len(self._networks)
