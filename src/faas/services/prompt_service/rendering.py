"""Where templates are compiled and rendered: a few threads of their own, off the event loop.

Each render runs within a `RenderBudget` (budget.py) and is registered while it runs, so that
a cancelled request and `stop()` can end it: a thread cannot be killed, but a render notices a
cancel at its next budget check (every 64 operations) and raises. Without that, a render
outlived its client, and at shutdown the interpreter waited for the thread forever.

Threads rather than a process pool: a render is ~0.1-0.3 ms and its variables come as Python
objects; a process would add pickling both ways and a second copy of Jinja per worker, and
buys nothing the budget does not already give (a render ends at its next check).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from faas.services.prompt_service import templates
from faas.services.prompt_service.budget import RenderBudget, RenderLimits
from faas.shared.config import Settings
from faas.shared.exceptions import DependencyUnavailable

P = ParamSpec("P")
T = TypeVar("T")


class TemplateRenderer:
    def __init__(
        self,
        limits: RenderLimits,
        *,
        workers: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.workers = workers
        self.clock = clock
        self.running: set[RenderBudget] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._stopped = False

    @classmethod
    def from_settings(cls, settings: Settings) -> TemplateRenderer:
        limits = RenderLimits(
            max_operations=settings.prompt_render_max_ops,
            timeout_s=settings.prompt_render_timeout_s,
            max_output_bytes=settings.prompt_max_output_bytes,
        )
        return cls(limits, workers=settings.prompt_render_workers)

    def _executor(self) -> ThreadPoolExecutor:
        if self._stopped:
            raise DependencyUnavailable("the prompt service is stopping")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="faas-prompt")
        return self._pool

    async def run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """CPU work bounded by its input (compiling, schema checks, token counting), on the
        same threads, so that it too leaves the event loop and queues behind a bound."""
        future = self._executor().submit(function, *args, **kwargs)
        return await asyncio.wrap_future(future)

    async def render(
        self,
        compiled: templates.Compiled,
        variables: Mapping[str, Any],
        schema: dict[str, Any] | None = None,
    ) -> str:
        """`variables` checked against `schema`, then rendered within a fresh budget."""
        budget = RenderBudget(self.limits, templates.TEMPLATE_FILENAME, self.clock)
        future = self._executor().submit(_render, compiled, variables, schema, budget)
        self.running.add(budget)
        future.add_done_callback(lambda _: self.running.discard(budget))
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # The caller is gone (a client disconnect, a shutdown past its grace time).
            budget.cancel("the request was cancelled")
            raise

    def start(self) -> None:
        self._stopped = False

    async def stop(self) -> None:
        """Refuse new work, end the renders in flight, and wait for the threads to finish
        (a render ends at its next budget check; queued ones end before they begin)."""
        self._stopped = True
        for budget in list(self.running):
            budget.cancel("the prompt service is stopping")
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True)


def _render(
    compiled: templates.Compiled,
    variables: Mapping[str, Any],
    schema: dict[str, Any] | None,
    budget: RenderBudget,
) -> str:
    templates.validate_variables(schema, variables)
    return templates.render(compiled, variables, budget)
