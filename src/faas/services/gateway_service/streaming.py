"""A streamed chat completion. Fallback to the next deployment is possible only until the
first content chunk; from then on the stream is committed, and a failure ends it with an
error event. Usage — partial if need be — is reconciled and published either way."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from faas.backends.limits import Reservation
from faas.services.gateway_service.accounting import (
    CallRecord,
    count_usage,
    estimate_prompt_tokens,
    stream_text,
)
from faas.services.gateway_service.admission import check_context
from faas.services.gateway_service.dispatch import Dispatcher, chat_request
from faas.services.gateway_service.limits import TenantLimits
from faas.services.gateway_service.models import Operation
from faas.services.gateway_service.providers.base import ProviderError, StreamEvent
from faas.services.gateway_service.routing import Attempt
from faas.services.gateway_service.routing_table import Deployment
from faas.shared.context import Identity


async def open_stream(
    dispatch: Dispatcher,
    identity: Identity,
    body: dict[str, Any],
    limits: TenantLimits,
    include_usage: bool,
    operation: Operation = "chat",
) -> tuple[AsyncIterator[bytes], CallRecord]:
    """Admit, route and wait for the first content chunk — falling back to the next
    deployment on failure up to that point — then hand back the byte stream to send."""
    call = CallRecord(operation, model=str(body.get("model") or ""), stream=True, request=body)
    model = dispatch.router.resolve(body.get("model"), "chat")
    call.model = model.name
    prompt_tokens = await check_context(model, body)
    reservation, estimate = await dispatch.admission.reserve_chat(
        identity.tenant_id, limits, model, body, prompt_tokens, call
    )
    request = chat_request(body)

    async def open_upstream(
        deployment: Deployment,
    ) -> tuple[AsyncIterator[StreamEvent], list[StreamEvent]]:
        upstream = dispatch.providers.chat(deployment.provider).stream(request, deployment)
        return upstream, await _until_content(upstream)

    (upstream, head), attempt = await dispatch.route(
        identity, model, estimate, call, reservation, open_upstream
    )
    run = StreamRun(dispatch, identity, body, call, attempt, reservation, include_usage)
    return run.run(head, upstream), call


class StreamRun:
    """Sends a committed stream: the buffered head, then the rest, then settles the call."""

    def __init__(
        self,
        dispatch: Dispatcher,
        identity: Identity,
        body: dict[str, Any],
        call: CallRecord,
        attempt: Attempt,
        reservation: Reservation,
        include_usage: bool,
    ) -> None:
        self.dispatch = dispatch
        self.identity = identity
        self.body = body
        self.call = call
        self.attempt = attempt
        self.reservation = reservation
        self.include_usage = include_usage
        self.seen: list[bytes] = []
        self.finish_reasons: list[str] = []

    def _frame(self, event: StreamEvent) -> bytes | None:
        if event.finish_reason is not None:
            self.finish_reasons.append(event.finish_reason)
        if event.usage is not None:
            self.call.usage = event.usage
            # A usage-only chunk (no choices) was asked for by us, not by this client.
            if not self.include_usage and b'"choices":[]' in event.data.replace(b" ", b""):
                return None
        # Every chunk: the usage count needs them when no chunk reports usage, the call's span
        # its text even when every chunk does (some upstreams repeat usage on each).
        self.seen.append(event.data)
        return b"data: " + event.data + b"\n\n"

    async def run(
        self, head: list[StreamEvent], upstream: AsyncIterator[StreamEvent]
    ) -> AsyncIterator[bytes]:
        failed: ProviderError | None = None
        started = time.perf_counter()
        try:
            for event in head:
                frame = self._frame(event)
                if frame is not None:
                    yield frame
            try:
                async for event in upstream:
                    frame = self._frame(event)
                    if frame is not None:
                        yield frame
            except ProviderError as exc:
                failed = exc
                yield b"data: " + orjson.dumps(_error_event(exc)) + b"\n\n"
            yield b"data: [DONE]\n\n"
        finally:
            self.call.upstream_s += time.perf_counter() - started
            close = getattr(upstream, "aclose", None)
            if close is not None:
                await close()
            await self._settle(failed)

    async def _settle(self, failed: ProviderError | None) -> None:
        call = self.call
        call.stream_chunks, call.finish_reasons = self.seen, self.finish_reasons
        if call.usage is None:
            prompt = estimate_prompt_tokens(self.body["messages"])
            call.usage = await count_usage(self.body, stream_text(self.seen), prompt)
        if failed is not None:
            call.status, call.error_code = "partial", failed.kind
            self.attempt.failed(count_against_breaker=True)
        else:
            self.attempt.succeeded(call.usage.total_tokens)
        await self.dispatch.admission.reconcile(self.reservation, call)
        await self.dispatch.recorder.record(self.identity, call)


def _error_event(exc: ProviderError) -> dict[str, Any]:
    return {
        "error": {
            "message": f"upstream failed mid-stream: {exc.message}",
            "type": "upstream_error",
            "code": exc.kind,
        }
    }


async def _until_content(upstream: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    head: list[StreamEvent] = []
    async for event in upstream:
        head.append(event)
        if event.has_content or event.finish_reason is not None:
            break
    return head
