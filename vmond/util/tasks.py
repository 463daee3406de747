"""A service that is one background task: started on entering its async context, cancelled and awaited on exit."""

from __future__ import annotations

import asyncio
import contextlib
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
