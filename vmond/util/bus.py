"""In-process publish/subscribe for live updates (event.created, event.updated, ...), with a replay window.

Every message gets a sequence number. The bus keeps the last few hundred so a dashboard that lost its
connection can ask for what it missed (``since``); when that is no longer held it must resync. Sequence
numbers start from the boot time in milliseconds, so numbers from before a restart are always lower than
numbers after it and a reconnecting client is told to resync instead of being handed the wrong messages.
Several central nodes each have a bus of their own, numbered on their own: each bus has an :attr:`Bus.id`, and a
client that names the bus its number came from is told to resync by any other (a browser moved to another node).

Each subscriber has its own bounded queue. A subscriber that falls behind is cut off (its ``overflowed`` flag is
set and its iterator ends), never allowed to hold messages back from the others or to grow memory.

A message may also be offered to one subscriber only (:meth:`Subscription.offer`), as droppable news of the
moment (who is looking at an alarm): not kept for replay, and skipped for a subscriber whose queue is half full,
so that it can never crowd out an event or cut the subscriber off.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

log = logging.getLogger(__name__)


class Message(NamedTuple):
    seq: int
    type: str
    data: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"type": self.type, "seq": self.seq, "data": self.data}


_CLOSED = object()


class Subscription:
    """A subscriber's bounded queue; iterate it with ``async for``."""

    def __init__(self, bus: Bus, maxsize: int) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize + 1)  # one spare slot for the close marker
        self._maxsize = maxsize
        self.overflowed = False
        self.closed = False

    def offer(self, message: Message, droppable: bool = False) -> None:
        """Queue *message*; a *droppable* one only while the queue is less than half full."""
        if self.closed:
            return
        if droppable and self._queue.qsize() >= self._maxsize // 2:
            return
        if self._queue.qsize() >= self._maxsize:
            self.overflowed = True
            self.close()
            return
        self._queue.put_nowait(message)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus._subscribers.discard(self)
            self._queue.put_nowait(_CLOSED)

    async def __aiter__(self) -> AsyncIterator[Message]:
        while True:
            item = await self._queue.get()
            if item is _CLOSED:
                return
            yield item

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Bus:
    def __init__(self, history: int = 500, first_seq: int | None = None) -> None:
        self._seq = int(time.time() * 1000) if first_seq is None else first_seq
        self.id = secrets.token_hex(8)  # which bus (node, boot) the sequence numbers belong to
        self._history: deque[Message] = deque(maxlen=history)
        self._subscribers: set[Subscription] = set()

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest message (or the starting point when none was sent yet)."""
        return self._seq

    def publish(self, type_: str, data: dict[str, Any]) -> Message:
        """Send *data* to every subscriber; never blocks (slow subscribers are dropped instead)."""
        self._seq += 1
        message = Message(self._seq, type_, data)
        self._history.append(message)
        for subscriber in list(self._subscribers):
            subscriber.offer(message)
            if subscriber.overflowed:
                log.warning("a live-update subscriber fell %d messages behind and was dropped", subscriber._maxsize)
        return message

    def subscribe(self, maxsize: int = 256) -> Subscription:
        subscription = Subscription(self, maxsize)
        self._subscribers.add(subscription)
        return subscription

    def since(self, seq: int) -> list[Message] | None:
        """The held messages after *seq*, or None when some of them are no longer held (the client must resync)."""
        if seq == self._seq:
            return []
        if seq > self._seq:
            return None  # a number from the future: another boot, or a confused client
        if not self._history or self._history[0].seq > seq + 1:
            return None
        return [m for m in self._history if m.seq > seq]

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
