"""Where CPU work of a request runs, so one big request cannot stall every other one.

Three places, by size:
- inline, for small inputs: a hop to a thread costs ~0.1 ms, more than counting the tokens of a
  short prompt;
- a worker thread (asyncio's default pool, which bounds how many run at once), for work that
  releases the GIL or is short between releases (numpy, hashing, tiktoken on one chunk);
- a process (`CpuPool`), for long pure-Python work on big inputs: chunking or parsing a
  multi-megabyte document in a thread held the GIL for stretches of 100 to 600 ms (py-spy --gil),
  and `/livez` waited that long behind it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

# About 1 ms of cl100k tokenizing or feature hashing on this class of machine.
INLINE_CHARS = 16_384
# Pure-Python work on more text than this goes to a process: below it, a thread's GIL holds
# stay well under the 100 ms a health probe may wait, and a process hop (pickling both ways)
# would cost more than it saves.
PROCESS_CHARS = 512 * 1024
_DONE = object()


def json_chars(value: object, limit: int = INLINE_CHARS) -> int:
    """About how many characters `value` (decoded JSON: dicts, lists, strings, numbers) takes
    as JSON, counted only until it passes `limit`: a size for `run_cpu` when the text is not
    at hand, at a cost bounded by `limit` rather than by the value (containers are walked
    lazily, never copied)."""
    total = 0
    pending: list[Iterator[object]] = [iter((value,))]
    while pending and total <= limit:
        item = next(pending[-1], _DONE)
        if item is _DONE:
            pending.pop()
        elif isinstance(item, str):
            total += len(item) + 3  # quotes and a separator
        elif isinstance(item, dict):
            total += 2
            pending.append(iter(item.items()))  # each pair a tuple: 2 more for ':' and ','
        elif isinstance(item, list | tuple):
            total += 2
            pending.append(iter(item))
        else:
            total += 8
    return total


async def run_cpu(size: int, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args)` inline when `size` (characters of input) is small, else in a worker thread."""
    if size <= INLINE_CHARS:
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


class CpuPool:
    """A bounded pool of worker processes, started at first use (most processes never need it).

    Processes are spawned, not forked: the server process holds threads (uvloop, database
    drivers) that a fork would copy mid-state. `fn` must be a module-level function and its
    arguments and result picklable.
    """

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None

    async def run(self, size: int, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args)` in a worker process when `size` is above PROCESS_CHARS, else as
        `run_cpu` would run it."""
        if size <= PROCESS_CHARS:
            return await run_cpu(size, fn, *args, **kwargs)
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")
            )
        # submit() starts a worker process when the pool has none idle; starting one took
        # ~150 ms of the caller's thread, so it happens in a thread too.
        future = await asyncio.to_thread(self._executor.submit, partial(fn, *args, **kwargs))
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
