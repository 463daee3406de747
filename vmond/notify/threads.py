"""Blocking sends in threads nobody has to wait for: one per target at a time, the stuck ones bounded.

Apprise's timeouts are per socket read (requests'): a target that trickles its answer a byte at a time holds its
call, and so its thread, for as long as it likes. A thread cannot be stopped from outside, so the callers give up
on the call at their deadline and leave its thread behind. What keeps that safe:

- the threads are daemon threads, so neither the sender's exit nor the interpreter's waits for a hung call
  (a pool's threads are joined at interpreter exit);
- a target whose call is still running (in time or stuck) gets no new one until it ends, so a target ties up at
  most one thread, and a slow target delays only itself;
- at most ``max_stuck`` threads may outlive their deadline: beyond that no new send starts until one ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

MAX_STUCK = 16


class Busy(RuntimeError):
    """The target has a call running still, or too many calls are stuck."""


class SendThreads:
    """``start(key, fn, *args)`` runs ``fn(*args)`` in a daemon thread of its own and returns its future."""

    def __init__(self, name: str = "notify", max_stuck: int = MAX_STUCK) -> None:
        self._name, self._max_stuck = name, max_stuck
        self._lock = threading.Lock()
        self._running: dict[str, Future[Any]] = {}  # key -> its call, until the thread ends
        self._overdue: set[str] = set()  # keys whose call passed its deadline and runs still

    def busy(self) -> set[str]:
        """The keys with a call running (in time or stuck): none of them may start another."""
        with self._lock:
            return set(self._running)

    def stuck(self) -> int:
        """How many calls passed their deadline and have not ended."""
        with self._lock:
            return len(self._overdue)

    def full(self) -> bool:
        """Too many calls are stuck: nothing new starts until one ends."""
        return self.stuck() >= self._max_stuck

    def start(self, key: str, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if key in self._running or len(self._overdue) >= self._max_stuck:
                raise Busy(key)
            self._running[key] = future
        future.set_running_or_notify_cancel()
        thread = threading.Thread(target=self._call, args=(key, future, fn, args), daemon=True,
                                  name=f"{self._name}-{len(self._running)}")
        try:
            thread.start()
        except BaseException:
            self._ended(key)
            raise
        return future

    def overdue(self, key: str) -> None:
        """The caller gave up on *key*'s call at its deadline: it counts as stuck until its thread ends."""
        with self._lock:
            if key in self._running:
                self._overdue.add(key)

    def _ended(self, key: str) -> None:
        with self._lock:
            self._running.pop(key, None)
            self._overdue.discard(key)

    def _call(self, key: str, future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # noqa: BLE001  # handed to the caller, like a pool's worker does
            self._ended(key)
            future.set_exception(exc)
        else:
            self._ended(key)
            future.set_result(result)
