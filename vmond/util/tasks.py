"""Background work: a service that is one task (started on entering its async context, cancelled and awaited on
exit), and a blocking call waited for with a bound."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any


class BackgroundService:
    task_name = "background"

    async def _run(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Any:
        self._task: asyncio.Task[None] | None = asyncio.create_task(self._run(), name=self.task_name)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        task, self._task = getattr(self, "_task", None), None
        while task is not None and not task.done():
            # Cancel again if a cancellation got lost: Python 3.11's wait_for() can swallow one that arrives just
            # as its future completes, and the task would then wait forever for work that never comes.
            task.cancel()
            await asyncio.wait([task], timeout=5)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def in_daemon_thread(call: Callable[[], None], timeout: float, name: str = "blocking-call") -> None:
    """Run a blocking *call* on a daemon thread of its own and wait for it at most *timeout* seconds: a call
    that hangs (a library's network thread) cannot hold up vmond's exit, as the executor's threads would."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def finish(exc: BaseException | None) -> None:
        if done.done():
            return
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(None)

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting coroutine
            loop.call_soon_threadsafe(finish, exc)
        else:
            loop.call_soon_threadsafe(finish, None)

    threading.Thread(target=run, name=name, daemon=True).start()
    async with asyncio.timeout(timeout):
        await done
