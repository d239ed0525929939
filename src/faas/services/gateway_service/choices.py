"""`n > 1`: several choices for one request. The gateway fans out — n calls through the whole
pipeline, each admitted, routed and recorded on its own — because not every provider takes `n`
(llama.cpp, the mock, most LiteLLM backends answer one choice), and a fan-out gives the same
answer shape whichever deployment serves. Choices are indexed 0..n-1; usage is summed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from faas.services.gateway_service.completion import Completion
from faas.services.gateway_service.models import CacheOptions, Operation
from faas.shared.context import Identity

if TYPE_CHECKING:
    from faas.services.gateway_service.service import GatewayService

T = TypeVar("T")
MAX_CHOICES = 8
_USAGE_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")


async def settle(calls: list[Awaitable[T]]) -> list[T]:
    """All results in order. Every call runs to its end before the first error is raised, so
    none is cancelled while it holds a reservation."""
    if len(calls) == 1:  # the common case: no task, no extra trip through the event loop
        return [await calls[0]]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    results: list[T] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        results.append(outcome)
    return results


def merge_completions(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """One chat.completion holding the first choice of each body, re-indexed, usage summed."""
    merged = dict(bodies[0])
    choices = []
    for index, body in enumerate(bodies):
        for choice in (body.get("choices") or [])[:1]:
            choices.append({**choice, "index": index})
    merged["choices"] = choices
    usages: list[dict[str, Any]] = [u for b in bodies if isinstance(u := b.get("usage"), dict)]
    if usages:
        merged["usage"] = {
            name: sum(int(u.get(name) or 0) for u in usages) for name in _USAGE_COUNTS
        }
    return merged


async def complete_choices(
    service: GatewayService,
    identity: Identity,
    body: dict[str, Any],
    n: int,
    *,
    cache: CacheOptions | None = None,
    idempotency_key: str | None = None,
    operation: Operation = "chat",
) -> Completion:
    """A completion with `n` choices."""
    single = {k: v for k, v in body.items() if k != "n"}

    async def one(index: int) -> Completion:
        key = f"{idempotency_key}#{index}" if idempotency_key and n > 1 else idempotency_key
        return await service.complete(
            identity, single, cache=cache, idempotency_key=key, operation=operation
        )

    if n == 1:
        return await one(0)
    done = await settle([one(i) for i in range(n)])
    merged = merge_completions([c.body for c in done])
    return Completion(merged, done[0].call, replayed=all(c.replayed for c in done))
