"""Worker pools: a task that kills its worker costs that task only, also with the next task already handed over."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from vmond.util.workers import WorkerFailed, WorkerLost, WorkerPool


def die() -> None:
    time.sleep(0.2)  # long enough for the next task to be handed to this worker meanwhile
    os._exit(1)  # as a segfault in a decoder would


def hang() -> None:
    time.sleep(3600)


def double(value: int) -> int:
    return value * 2


@pytest.mark.parametrize("culprit, timeout", [(die, 30.0), (hang, 1.0)])
async def test_the_task_waiting_behind_a_dying_one_is_lost_not_failed(culprit: object, timeout: float) -> None:
    async with WorkerPool("test") as pool:
        handed = asyncio.Event()
        first = asyncio.ensure_future(pool.run(culprit, timeout=timeout, on_submitted=handed.set))  # type: ignore[arg-type]
        await handed.wait()
        second = asyncio.ensure_future(pool.run(double, 21, timeout=30.0))
        with pytest.raises(WorkerFailed) as failed:
            await first
        assert not isinstance(failed.value, WorkerLost)  # the one to blame
        with pytest.raises(WorkerLost):
            await second  # never ran: it is to be run again
        assert pool.restarts == 1
        assert await pool.run(double, 21, timeout=30.0) == 42  # the fresh worker takes it
