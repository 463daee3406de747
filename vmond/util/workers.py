"""CPU work in worker processes the daemon owns: parsing hostile mail now, encoding clips later.

A worker runs at a lower priority, ignores SIGINT (the daemon decides when it ends), has a memory ceiling, and is
replaced after a number of tasks. A task that overruns its time, or a worker that dies (a segfault in a codec,
the kernel's OOM killer), costs that task only: the pool is rebuilt and the daemon carries on. Workers are forked
from a fork server (a fresh interpreter, not a copy of the threaded daemon) that has the heavy modules already
imported, so a replacement is cheap even on a Raspberry Pi.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import resource
import select
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

STOP_GRACE = 10.0  # seconds a worker gets to finish its task when the daemon stops


class WorkerFailed(RuntimeError):
    """The task's worker died or overran its time; the message says which."""


class WorkerLost(WorkerFailed):
    """The worker died under another task while this one waited for it: this one is not to blame."""


def _init_worker(nice: int, memory_limit: int | None, daemon_pid: int, idle: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if nice:
        os.nice(nice)
    if idle:
        # Only the CPU nobody else wants: a clip may wait, the SMTP door and the pipeline may not.
        with contextlib.suppress(AttributeError, OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    if memory_limit:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    threading.Thread(target=_exit_with, args=(daemon_pid,), name="daemon-watch", daemon=True).start()


def _exit_with(daemon_pid: int) -> None:
    """End this worker when the daemon is gone (kill -9, a crash).

    The executor's pipes are held open by the workers themselves, so they would wait for work forever, and keep
    the fork server alive with them: every restart after a crash would leave a set of orphans behind."""
    try:
        pidfd = os.pidfd_open(daemon_pid)
    except (AttributeError, OSError):  # no pidfd (old kernel): poll
        while True:
            time.sleep(2)
            try:
                os.kill(daemon_pid, 0)
            except ProcessLookupError:
                os._exit(0)
    select.select([pidfd], [], [])  # readable once the process has exited
    os._exit(0)


def _ready() -> bool:
    return True


def prepare_fork_server(preload: Sequence[str]) -> None:
    """Modules the fork server imports once, so that every worker forked from it starts with them loaded.

    One fork server serves every pool of the process: call this once, before the first task, with all of them."""
    multiprocessing.get_context("forkserver").set_forkserver_preload(list(preload))


class WorkerPool:
    """An async context around a process pool; ``await pool.run(fn, *args, timeout=...)``."""

    def __init__(self, name: str, workers: int = 1, max_tasks: int = 200, nice: int = 10,
                 memory_limit: int | None = 1 << 30, idle: bool = False) -> None:
        self.name = name
        self._idle = idle
        self._workers = workers
        self._max_tasks = max_tasks
        self._nice = nice
        self._memory_limit = memory_limit
        self._context = multiprocessing.get_context("forkserver")
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None
        self._handed: list[concurrent.futures.Future[Any]] = []  # tasks handed to the pool, oldest first
        self._blamed: tuple[concurrent.futures.ProcessPoolExecutor, concurrent.futures.Future[Any]] | None = None
        self.restarts = 0
        self.completed = 0

    def _new_executor(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self._workers, mp_context=self._context, initializer=_init_worker,
            initargs=(self._nice, self._memory_limit, os.getpid(), self._idle), max_tasks_per_child=self._max_tasks)

    async def __aenter__(self) -> WorkerPool:
        self._executor = self._new_executor()
        # Queued tasks wait here, not in the executor's unbounded queue.
        self._slots = asyncio.Semaphore(self._workers * 2)
        # Start the workers now, off the loop: the first mail should not wait for a process to start.
        await self.run(_ready, timeout=60)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        # Ask first: killing a worker while the executor still feeds it a task (a big mail) leaves the feeder
        # thread blocked on a pipe nobody reads, and some Python versions (Debian 12's 3.11.2) then hang at exit.
        processes = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_GRACE
        while any(p.is_alive() for p in processes) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for process in processes:
            if process.is_alive():
                log.warning("%s worker did not finish its task in %.0f s; killing it", self.name, STOP_GRACE)
                process.kill()
        await loop.run_in_executor(None, executor.shutdown)

    @staticmethod
    def _kill(executor: concurrent.futures.ProcessPoolExecutor) -> None:
        # ProcessPoolExecutor cannot cancel a running task; its processes can be killed. (_processes is
        # private but has been there, unchanged, since the executor exists.)
        for process in list((getattr(executor, "_processes", None) or {}).values()):
            if process.is_alive():
                process.kill()
        executor.shutdown(wait=False, cancel_futures=True)

    def _restart(self, why: str, broken: concurrent.futures.ProcessPoolExecutor | None) -> None:
        if broken is not self._executor:
            return  # another task saw the same break first and started a fresh pool
        log.warning("%s worker: %s; starting a fresh one", self.name, why)
        self.restarts += 1
        if self._executor is not None:
            self._kill(self._executor)  # kill() and a non-waiting shutdown: quick, fine on the loop
        self._executor = self._new_executor()

    async def run(self, fn: Callable[..., T], *args: Any, timeout: float,
                  on_submitted: Callable[[], None] | None = None) -> T:
        """Run ``fn(*args)`` in a worker; raises :class:`WorkerFailed` when the worker dies or overruns.

        Up to twice the pool's workers tasks are handed to it at once, so a worker starts the next one as soon as
        it is done (*on_submitted* is called once this one is handed over). When a worker dies, the task it was
        running fails with :class:`WorkerFailed`; those waiting behind it fail with :class:`WorkerLost`, to be run
        again: a task that kills its worker costs that task only."""
        assert self._executor is not None and self._slots is not None, "pool not started"
        loop = asyncio.get_running_loop()
        async with self._slots:
            # submit() may start a worker process (and the first time, the fork server): never on the loop.
            executor = self._executor
            try:
                future = await loop.run_in_executor(None, executor.submit, fn, *args)
            except BrokenProcessPool:
                self._restart("the pool was broken", executor)
                executor = self._executor
                future = await loop.run_in_executor(None, executor.submit, fn, *args)
            self._handed.append(future)
            if on_submitted is not None:
                on_submitted()
            try:
                async with asyncio.timeout(timeout):
                    result = await asyncio.wrap_future(future)
            except TimeoutError:
                self._blame(executor, future)
                self._restart(f"a task ran longer than {timeout:.0f} s", executor)
                raise WorkerFailed(f"took longer than {timeout:.0f} s") from None
            except BrokenProcessPool:
                culprit = self._blame(executor, self._handed[0])
                self._restart("a worker died", executor)
                if culprit is not future:
                    raise WorkerLost("the worker died while this task waited for it") from None
                raise WorkerFailed("the worker process died") from None
            finally:
                self._handed.remove(future)
            self.completed += 1
            return result

    def _blame(self, executor: concurrent.futures.ProcessPoolExecutor, task: concurrent.futures.Future[Any],
               ) -> concurrent.futures.Future[Any]:
        """The task that broke *executor*: the first one named (the oldest handed over when the break is seen;
        the workers take tasks in that order)."""
        if self._blamed is None or self._blamed[0] is not executor:
            self._blamed = (executor, task)
        return self._blamed[1]
