"""The work budget of one template render: operations, a wall-clock deadline, and a stop.

Jinja's sandbox bounds what a template may touch, not how long it runs: two nested
`range(100000)` loops are 10^10 iterations, and per-loop caps multiply when loops nest. A
thread cannot be killed, so the check runs inside the render: while it renders, the render
thread (and only it) carries a trace function (`sys.settrace`). Every Python call counts as one
operation, and so does every line event of the template's own compiled code, which is where
loop iterations happen; every `CHECK_EVERY` operations the deadline and the stop are read.
Raising from the trace function raises inside the template, which ends the render wherever it
is. C-level work between two events is bounded separately by the sandbox's size checks
(templates.py).

Measured on this machine (2 cores, Python 3.11): the `rag.answer` template with 20 sources
(~650 operations) renders in ~65 µs untraced and ~300 µs traced (a no-op tracer alone costs
~150 µs: tracing takes CPython off its specialised fast path); a template-only loop runs
~3 M operations/s traced, so the default budget of 2 M operations is under a second of CPU.
A process pool with kill would bound C code too, but costs more per render than this (pickling
the variables both ways, a Jinja per process) and the size checks already bound C steps.
"""

from __future__ import annotations

import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

CHECK_EVERY = 64

Limit = Literal["render_operations", "render_timeout_s", "render_output_bytes", "stopped"]


@dataclass(frozen=True)
class RenderLimits:
    max_operations: int = 2_000_000
    timeout_s: float = 2.0
    max_output_bytes: int = 1_000_000


class RenderAborted(BaseException):
    """Ends a render from inside: a BaseException, so that no `except Exception` on the way
    (Jinja's runtime, a filter) swallows it."""

    def __init__(self, limit: Limit, maximum: float | None) -> None:
        super().__init__(limit)
        self.limit = limit
        self.maximum = maximum


class RenderBudget:
    """One render's budget; `cancel()` may be called from any thread (a plain attribute
    store, read by the render thread at its next check)."""

    def __init__(
        self,
        limits: RenderLimits,
        template_filename: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.operations = 0
        self.stop_reason: str | None = None
        self.started = threading.Event()  # set once the render runs under the budget
        self._filename = template_filename
        self._deadline = float("inf")

    def cancel(self, reason: str) -> None:
        self.stop_reason = reason

    @contextmanager
    def enforced(self) -> Iterator[None]:
        """Trace the current thread for the duration of the block, then restore the tracer
        it had (a debugger's or coverage's)."""
        self._deadline = self.clock() + self.limits.timeout_s
        self.check()
        # Closures over locals rather than methods over attributes: half the overhead.
        max_operations = self.limits.max_operations
        filename = self._filename
        check = self.check
        operations = self.operations

        # The counting is written out in both functions: a shared helper is one more call per
        # event.
        def on_line(frame: types.FrameType, event: str, arg: Any) -> Any:
            nonlocal operations
            if event == "line":
                operations += 1
                if operations > max_operations:
                    raise RenderAborted("render_operations", max_operations)
                if not operations % CHECK_EVERY:
                    check()
            return on_line

        def on_call(frame: types.FrameType, event: str, arg: Any) -> Any:
            nonlocal operations
            operations += 1
            if operations > max_operations:
                raise RenderAborted("render_operations", max_operations)
            if not operations % CHECK_EVERY:
                check()
            # Line events only in the template's own code (where its loops run): Jinja's
            # runtime and the filters count once per call.
            return on_line if frame.f_code.co_filename == filename else None

        previous = sys.gettrace()
        sys.settrace(on_call)
        self.started.set()
        try:
            yield
        finally:
            sys.settrace(previous)
            self.operations = operations

    def check(self) -> None:
        if self.stop_reason is not None:
            raise RenderAborted("stopped", None)
        if self.clock() > self._deadline:
            raise RenderAborted("render_timeout_s", self.limits.timeout_s)
