"""The request path of a chat or embeddings call: context check, idempotency, cache, atomic
admission, routing with fallback, usage reconciliation and the usage event."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import orjson

from faas.backends.kv import KeyValueStore
from faas.services.gateway_service.accounting import (
    CallRecord,
    UsageRecorder,
    completion_text,
    counted_usage,
    estimate_prompt_tokens,
)
from faas.services.gateway_service.cache import (
    ResponseCache,
    cache_key,
    is_deterministic,
    request_fingerprint,
    semantic_text,
)
from faas.services.gateway_service.config import Deployment, ModelConfig
from faas.services.gateway_service.inputs import embedding_tokens
from faas.services.gateway_service.limits import LimitStore, Reservation, TenantLimits
from faas.services.gateway_service.models import CacheOptions
from faas.services.gateway_service.offload import text_size
from faas.services.gateway_service.providers.base import (
    ChatProvider,
    ChatRequest,
    EmbeddingProvider,
    EmbeddingResult,
    MissingExtra,
    ProviderError,
    StreamEvent,
    Usage,
)
from faas.services.gateway_service.routing import Attempt, ModelRouter
from faas.shared.context import Identity
from faas.shared.cpu import run_cpu
from faas.shared.exceptions import (
    BadRequest,
    Conflict,
    DependencyUnavailable,
    FaaSError,
    PayloadTooLarge,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    ValidationFailed,
)

log = logging.getLogger("faas.gateway")
T = TypeVar("T")

# Request fields the gateway consumes itself; the rest goes upstream as given.
GATEWAY_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "cache"})
IDEMPOTENCY_TTL_S = 24 * 3600


@dataclass
class Completion:
    body: dict[str, Any]
    call: CallRecord
    replayed: bool = False


class Providers:
    """Provider instances by name, built on first use (so an unused extra is never imported)."""

    def __init__(self) -> None:
        self._chat: dict[str, ChatProvider] = {}
        self._embed: dict[str, EmbeddingProvider] = {}

    def chat(self, name: str) -> ChatProvider:
        from faas.services.gateway_service.providers import build_chat_provider

        if name not in self._chat:
            self._chat[name] = build_chat_provider(name)
        return self._chat[name]

    def embedding(self, name: str) -> EmbeddingProvider:
        from faas.services.gateway_service.providers import build_embedding_provider

        if name not in self._embed:
            self._embed[name] = build_embedding_provider(name)
        return self._embed[name]

    async def aclose(self) -> None:
        providers: list[ChatProvider | EmbeddingProvider] = [
            *self._chat.values(),
            *self._embed.values(),
        ]
        for provider in providers:
            await provider.aclose()
        self._chat.clear()
        self._embed.clear()


def context_limit(model: ModelConfig) -> int | None:
    windows = [d.context_window for d in model.deployments if d.context_window]
    return max(windows) if windows else None


def worst_case(
    model: ModelConfig, prompt_tokens: int, body: dict[str, Any], fallback_output: int
) -> tuple[int, float]:
    """Tokens and USD to reserve at admission: the most any deployment of the model can bill
    for this request (its max_tokens, else the deployment's max output), at its own price."""
    asked = body.get("max_tokens") or body.get("max_completion_tokens")
    tokens, cost = 0, 0.0
    for d in model.deployments:
        output = d.output_bound(prompt_tokens, int(asked) if asked else None, fallback_output)
        tokens = max(tokens, prompt_tokens + output)
        cost = max(cost, d.price.cost(prompt_tokens, output))
    return tokens, cost


def exact_prompt_tokens(body: dict[str, Any]) -> int:
    from faas.services.gateway_service.providers.tokens import count_chat_tokens

    return count_chat_tokens(body["messages"], body.get("tools"))


class ChatPipeline:
    def __init__(
        self,
        *,
        router: ModelRouter,
        providers: Providers,
        limits: LimitStore,
        cache: ResponseCache,
        kv: KeyValueStore,
        recorder: UsageRecorder,
        completion_estimate_tokens: int,
    ) -> None:
        self.router = router
        self.providers = providers
        self.limits = limits
        self.cache = cache
        self.kv = kv
        self.recorder = recorder
        self.completion_estimate = completion_estimate_tokens

    # -- chat ------------------------------------------------------------------------------

    async def complete(
        self,
        identity: Identity,
        body: dict[str, Any],
        limits: TenantLimits,
        *,
        cache: CacheOptions | None = None,
        idempotency_key: str | None = None,
    ) -> Completion:
        call = CallRecord("chat", model=str(body.get("model") or ""))
        model = self.router.resolve(body.get("model"), "chat")
        call.model = model.name
        tenant = identity.tenant_id
        prompt_tokens = await self._check_context(model, body)
        fingerprint = request_fingerprint(tenant, model.name, _upstream_view(body))
        idem_key = None
        if idempotency_key is not None:
            idem_key, replay = await self._idempotency_begin(tenant, idempotency_key, fingerprint)
            if replay is not None:
                return Completion(replay, call, replayed=True)
        try:
            completion = await self._complete(
                identity, body, limits, model, call, cache, fingerprint, prompt_tokens
            )
        except BaseException:
            if idem_key is not None:
                await self.kv.delete(idem_key)
            raise
        if idem_key is not None:
            record = {"state": "done", "fp": fingerprint, "body": completion.body}
            await self.kv.set(idem_key, orjson.dumps(record), IDEMPOTENCY_TTL_S)
        return completion

    async def _complete(
        self,
        identity: Identity,
        body: dict[str, Any],
        limits: TenantLimits,
        model: ModelConfig,
        call: CallRecord,
        cache: CacheOptions | None,
        fingerprint: str,
        prompt_tokens: int,
    ) -> Completion:
        tenant = identity.tenant_id
        opts = cache or CacheOptions()
        mark = time.perf_counter()
        exact = opts.exact if opts.exact is not None else True
        use_exact = exact and (opts.force or is_deterministic(body))
        key = cache_key(tenant, fingerprint)
        vector: np.ndarray | None = None
        if use_exact:
            hit = await self.cache.get(key)
            if hit is not None:
                return await self._cache_hit(identity, limits, call, hit, "exact", mark)
        use_semantic = opts.semantic if opts.semantic is not None else limits.semantic_cache
        if use_semantic:
            text = semantic_text(body, force=opts.force)
            if text is not None:
                vector = await self._cache_vector(text)
                found = self.cache.semantic.nearest(tenant, model.name, vector, opts.threshold)
                if found is not None:
                    hit = await self.cache.get(found[0])
                    if hit is not None:
                        return await self._cache_hit(identity, limits, call, hit, "semantic", mark)
                    self.cache.semantic.forget(tenant, model.name, found[0])
        mark = call.mark("cache", mark)

        estimate, worst_cost = worst_case(model, prompt_tokens, body, self.completion_estimate)
        reservation = await self.limits.reserve(tenant, limits, estimate, worst_cost)
        mark = call.mark("limits", mark)
        request = ChatRequest(
            messages=body["messages"],
            params={k: v for k, v in body.items() if k not in GATEWAY_FIELDS},
        )
        try:
            result, attempt = await self._first_success(
                model,
                estimate,
                call,
                lambda d: self.providers.chat(d.provider).chat(request, d),
            )
        except FaaSError as exc:
            await self._abandon(identity, call, reservation, exc)
            raise
        call.usage = result.usage or await count_usage(
            body, completion_text(result.body), prompt_tokens
        )
        attempt.succeeded(call.usage.total_tokens)
        await self.limits.reconcile(reservation, call.usage.total_tokens, call.cost_usd)
        if use_exact or vector is not None:
            await self.cache.put(key, result.body)
            if vector is not None:
                self.cache.semantic.add(tenant, model.name, vector, key)
        await self.recorder.record(identity, call)
        return Completion(result.body, call)

    async def _cache_hit(
        self,
        identity: Identity,
        limits: TenantLimits,
        call: CallRecord,
        body: dict[str, Any],
        kind: str,
        mark: float,
    ) -> Completion:
        # A hit still counts as a request against the rate limit, but costs no tokens.
        await self.limits.reserve(identity.tenant_id, limits, 0, 0.0)
        call.mark("cache", mark)
        call.cached = "exact" if kind == "exact" else "semantic"
        call.usage = Usage.from_openai(body.get("usage")) or Usage(source="estimated")
        await self.recorder.record(identity, call)
        return Completion(body, call)

    async def _first_success(
        self,
        model: ModelConfig,
        tokens: int,
        call: CallRecord,
        invoke: Callable[[Deployment], Awaitable[T]],
    ) -> tuple[T, Attempt]:
        """Try the model's deployments in routing order until one answers; retryable failures
        move on to the next, others are raised as the caller's error."""
        failures: list[dict[str, Any]] = []
        for state in self.router.order(model):
            attempt = self._attempt(state, tokens, failures)
            if attempt is None:
                continue
            deployment = attempt.deployment
            started = time.perf_counter()
            try:
                result = await invoke(deployment)
            except ProviderError as exc:
                call.upstream_s += time.perf_counter() - started
                self._failed(attempt, exc, failures)
                continue
            except MissingExtra as exc:
                attempt.failed(count_against_breaker=False)
                failures.append(
                    {"deployment": deployment.id, "kind": "unavailable", "message": str(exc)}
                )
                continue
            call.upstream_s += time.perf_counter() - started
            call.timings["upstream"] = call.upstream_s
            call.deployment = deployment
            return result, attempt
        raise exhausted(model, failures)

    async def _abandon(
        self, identity: Identity, call: CallRecord, reservation: Reservation, exc: FaaSError
    ) -> None:
        """No deployment answered: release the reservation and record the failed call."""
        await self.limits.reconcile(reservation, 0, 0.0)
        call.status, call.error_code = "error", exc.code
        await self.recorder.record(identity, call)

    def _attempt(self, state: Any, tokens: int, failures: list[dict[str, Any]]) -> Attempt | None:
        if state.deployment.unavailable:
            failures.append(
                {
                    "deployment": state.deployment.id,
                    "kind": "unavailable",
                    "message": state.deployment.unavailable,
                }
            )
            return None
        attempt = self.router.admit(state, tokens)
        if attempt is None:
            failures.append(
                {
                    "deployment": state.deployment.id,
                    "kind": "skipped",
                    "message": "breaker open or deployment rpm/tpm reached",
                }
            )
        return attempt

    @staticmethod
    def _failed(attempt: Attempt, exc: ProviderError, failures: list[dict[str, Any]]) -> None:
        deployment = attempt.deployment
        if not exc.retryable:
            attempt.failed(count_against_breaker=exc.kind == "auth")
            raise client_error(exc, deployment)
        attempt.failed(count_against_breaker=True)
        failures.append(
            {
                "deployment": deployment.id,
                "kind": exc.kind,
                "status": exc.status,
                "message": exc.message,
                "retry_after_s": exc.retry_after_s,
            }
        )
        log.info(
            "deployment failed; trying the next",
            extra={"deployment": deployment.id, "kind": exc.kind},
        )

    # -- streaming -------------------------------------------------------------------------

    async def open_stream(
        self,
        identity: Identity,
        body: dict[str, Any],
        limits: TenantLimits,
        *,
        include_usage: bool,
    ) -> tuple[AsyncIterator[bytes], CallRecord]:
        """Admit, route and wait for the first content chunk — falling back to the next
        deployment on failure up to that point — then hand back the byte stream to send."""
        call = CallRecord("chat", model=str(body.get("model") or ""), stream=True)
        model = self.router.resolve(body.get("model"), "chat")
        call.model = model.name
        prompt_tokens = await self._check_context(model, body)
        mark = time.perf_counter()
        estimate, worst_cost = worst_case(model, prompt_tokens, body, self.completion_estimate)
        reservation = await self.limits.reserve(identity.tenant_id, limits, estimate, worst_cost)
        call.mark("limits", mark)
        request = ChatRequest(
            messages=body["messages"],
            params={k: v for k, v in body.items() if k not in GATEWAY_FIELDS},
        )

        async def open_upstream(
            deployment: Deployment,
        ) -> tuple[AsyncIterator[StreamEvent], list[StreamEvent]]:
            upstream = self.providers.chat(deployment.provider).stream(request, deployment)
            return upstream, await _until_content(upstream)

        try:
            (upstream, head), attempt = await self._first_success(
                model, estimate, call, open_upstream
            )
        except FaaSError as exc:
            await self._abandon(identity, call, reservation, exc)
            raise
        stream = StreamRun(
            self,
            identity,
            body,
            call,
            attempt,
            reservation,
            estimate,
            head,
            upstream,
            include_usage,
        )
        return stream.run(), call

    # -- embeddings ------------------------------------------------------------------------

    async def embed(
        self,
        identity: Identity,
        texts: list[str],
        model_name: str | None,
        limits: TenantLimits,
        *,
        field: str = "input",
    ) -> tuple[EmbeddingResult, CallRecord]:
        """Embeddings of `texts`; `field` names them in a refusal of oversized input."""
        call = CallRecord("embeddings", model=model_name or "")
        model = self.router.resolve(model_name, "embedding")
        call.model = model.name
        estimate = await embedding_tokens(texts, field)
        mark = time.perf_counter()
        worst_cost = max(d.price.cost(estimate, 0) for d in model.deployments)
        reservation = await self.limits.reserve(identity.tenant_id, limits, estimate, worst_cost)
        call.mark("limits", mark)
        try:
            result, attempt = await self._first_success(
                model,
                estimate,
                call,
                lambda d: self.providers.embedding(d.provider).embed(texts, d),
            )
        except FaaSError as exc:
            await self._abandon(identity, call, reservation, exc)
            raise
        usage = result.usage
        if usage is None:
            usage = await run_cpu(text_size(texts), _counted_embedding_usage, texts)
        call.usage = usage
        attempt.succeeded(usage.total_tokens)
        await self.limits.reconcile(reservation, usage.total_tokens, call.cost_usd)
        await self.recorder.record(identity, call)
        return result, call

    # -- helpers ---------------------------------------------------------------------------

    async def _check_context(self, model: ModelConfig, body: dict[str, Any]) -> int:
        estimate = estimate_prompt_tokens(body["messages"])
        window = context_limit(model)
        # Count exactly only when the cheap estimate comes near the window.
        if window is not None and estimate * 4 // 3 > window:
            exact = await run_cpu(estimate * 4, exact_prompt_tokens, body)
            if exact > window:
                raise PayloadTooLarge(
                    f"the prompt is {exact} tokens; model {model.name!r} accepts {window}",
                    details={"prompt_tokens": exact, "context_window": window},
                )
            return max(estimate, exact)
        return estimate

    async def _idempotency_begin(
        self, tenant: str, key: str, fingerprint: str
    ) -> tuple[str, dict[str, Any] | None]:
        digest = hashlib.sha256(key.encode()).hexdigest()
        kv_key = f"faas:{tenant}:gateway-idempotency:{digest}"
        pending = orjson.dumps({"state": "pending", "fp": fingerprint})
        if await self.kv.set_if_absent(kv_key, pending, 600):
            return kv_key, None
        raw = await self.kv.get(kv_key)
        if raw is None:  # expired between the two calls: take it over
            await self.kv.set(kv_key, pending, 600)
            return kv_key, None
        record = orjson.loads(raw)
        if record.get("fp") != fingerprint:
            raise ValidationFailed("this Idempotency-Key was already used for a different request")
        if record.get("state") != "done":
            raise Conflict(
                "a request with this Idempotency-Key is still in progress",
                headers={"Retry-After": "1"},
            )
        return kv_key, dict(record["body"])

    async def _cache_vector(self, text: str) -> np.ndarray:
        model = self.router.table.default_for("embedding")
        deployment = model.deployments[0]
        result = await self.providers.embedding(deployment.provider).embed([text], deployment)
        vector = np.asarray(result.vectors[0], dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm else vector


class StreamRun:
    """Sends a committed stream: the buffered head, then the rest; a failure after content was
    sent ends the stream with an error event (no fallback is possible any more), and usage —
    partial if need be — is reconciled and published either way."""

    def __init__(
        self,
        pipeline: ChatPipeline,
        identity: Identity,
        body: dict[str, Any],
        call: CallRecord,
        attempt: Attempt,
        reservation: Any,
        estimate: int,
        head: list[StreamEvent],
        upstream: AsyncIterator[StreamEvent],
        include_usage: bool,
    ) -> None:
        self.p = pipeline
        self.identity = identity
        self.body = body
        self.call = call
        self.attempt = attempt
        self.reservation = reservation
        self.estimate = estimate
        self.head = head
        self.upstream = upstream
        self.include_usage = include_usage
        self.seen: list[bytes] = []

    def _frame(self, event: StreamEvent) -> bytes | None:
        if event.usage is not None:
            self.call.usage = event.usage
            # A usage-only chunk (no choices) was asked for by us, not by this client.
            if not self.include_usage and b'"choices":[]' in event.data.replace(b" ", b""):
                return None
        if self.call.usage is None:
            self.seen.append(event.data)
        return b"data: " + event.data + b"\n\n"

    async def run(self) -> AsyncIterator[bytes]:
        failed: ProviderError | None = None
        started = time.perf_counter()
        try:
            for event in self.head:
                frame = self._frame(event)
                if frame is not None:
                    yield frame
            try:
                async for event in self.upstream:
                    frame = self._frame(event)
                    if frame is not None:
                        yield frame
            except ProviderError as exc:
                failed = exc
                error = {
                    "error": {
                        "message": f"upstream failed mid-stream: {exc.message}",
                        "type": "upstream_error",
                        "code": exc.kind,
                    }
                }
                yield b"data: " + orjson.dumps(error) + b"\n\n"
            yield b"data: [DONE]\n\n"
        finally:
            self.call.upstream_s += time.perf_counter() - started
            close = getattr(self.upstream, "aclose", None)
            if close is not None:
                await close()
            await self._settle(failed)

    async def _settle(self, failed: ProviderError | None) -> None:
        call = self.call
        if call.usage is None:
            prompt = estimate_prompt_tokens(self.body["messages"])
            call.usage = await count_usage(self.body, _stream_text(self.seen), prompt)
        if failed is not None:
            call.status, call.error_code = "partial", failed.kind
            self.attempt.failed(count_against_breaker=True)
        else:
            self.attempt.succeeded(call.usage.total_tokens)
        await self.p.limits.reconcile(self.reservation, call.usage.total_tokens, call.cost_usd)
        await self.p.recorder.record(self.identity, call)


async def _until_content(upstream: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    head: list[StreamEvent] = []
    async for event in upstream:
        head.append(event)
        if event.has_content or event.finish_reason is not None:
            break
    return head


def _stream_text(datas: list[bytes]) -> str:
    parts: list[str] = []
    for data in datas:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                parts.append(delta["content"])
            for call in delta.get("tool_calls") or []:
                function = call.get("function") or {}
                parts.append(str(function.get("name") or "") + str(function.get("arguments") or ""))
    return "".join(parts)


async def count_usage(body: dict[str, Any], completion: str, prompt_estimate: int) -> Usage:
    """Usage counted by the gateway when the provider reported none (off the loop if long)."""
    size = prompt_estimate * 4 + len(completion)
    return await run_cpu(size, counted_usage, body["messages"], completion, body.get("tools"))


def _counted_embedding_usage(texts: list[str]) -> Usage:
    from faas.services.gateway_service.providers.tokens import count_tokens

    return Usage(prompt_tokens=sum(count_tokens(t) for t in texts), source="estimated")


def _upstream_view(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "cache"}


def client_error(exc: ProviderError, deployment: Deployment) -> FaaSError:
    """A non-retryable upstream answer, as the caller should see it (never leaking keys)."""
    if exc.kind == "auth":
        return UpstreamError(
            f"deployment {deployment.id} rejected the gateway's credentials",
            details={"deployment": deployment.id, "status": exc.status},
        )
    details: dict[str, Any] = {"deployment": deployment.id, "status": exc.status}
    if exc.body:
        details["upstream"] = exc.body
    return BadRequest(f"upstream rejected the request: {exc.message}", details=details)


def exhausted(model: ModelConfig, failures: list[dict[str, Any]]) -> FaaSError:
    details = {"model": model.name, "attempts": failures}
    kinds = {f["kind"] for f in failures}
    if "unavailable" in kinds and kinds <= {"unavailable", "skipped"}:
        reasons = sorted({f["message"] for f in failures if f["kind"] == "unavailable"})
        return DependencyUnavailable(
            f"no deployment of {model.name!r} is available: {'; '.join(reasons)}",
            details=details,
        )
    if failures and kinds <= {"skipped"}:
        return DependencyUnavailable(
            f"no deployment of {model.name!r} can take requests now (breakers open or "
            "deployment limits reached)",
            details=details,
            headers={"Retry-After": "5"},
        )
    if kinds and kinds <= {"rate_limited", "skipped"}:
        retry = max((f.get("retry_after_s") or 1.0) for f in failures)
        return RateLimited(
            f"every deployment of {model.name!r} is rate limited upstream",
            retry_after_s=retry,
            details=details,
        )
    if kinds and kinds <= {"timeout", "skipped"}:
        return UpstreamTimeout(f"every deployment of {model.name!r} timed out", details=details)
    return UpstreamError(f"every deployment of {model.name!r} failed", details=details)
