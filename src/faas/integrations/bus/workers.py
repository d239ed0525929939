"""The bounded pool that runs message and job handlers, and the stop-with-grace of a loop task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("faas.bus")


class Workers:
    """Runs handler tasks concurrently, at most `concurrency` at a time.

    `acquire()` waits for a free slot (back-pressure for the caller), `start()` runs a coroutine
    in that slot and frees it when the task ends.
    """

    def __init__(self, concurrency: int, name: str) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._name = name

    async def acquire(self) -> None:
        await self._slots.acquire()

    async def acquire_free(self, most: int) -> int:
        """Reserve up to `most` slots that are free now, without waiting; how many it got."""
        taken = 0
        while taken < most and not self._slots.locked():
            await self._slots.acquire()  # returns at once: a slot is free
            taken += 1
        return taken

    def release(self, slots: int = 1) -> None:
        for _ in range(slots):
            self._slots.release()

    def start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s: handler task failed", self._name, exc_info=exc)

    async def drain(self, grace_s: float) -> None:
        """Let running handlers finish for up to `grace_s`, then cancel the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            log.warning(
                "%s: cancelled %d handlers still running at close", self._name, len(pending)
            )
            await asyncio.wait(pending)


async def stop_task(task: asyncio.Task[None], wait_s: float) -> None:
    """Give a loop that was told to stop `wait_s` to end by itself (finishing what it holds),
    then cancel it."""
    done, _ = await asyncio.wait({task}, timeout=wait_s)
    if not done:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
