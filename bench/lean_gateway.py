"""How close to the bare proxy a gateway doing a subset of faas's per-request work can get.

The bare proxy (bench/bare_proxy.py) forwards bytes. This app is that proxy plus, written as
directly as Python allows in one pure ASGI function, part of the work faas's gateway does for
every chat completion:

- a request context: the caller's correlation id (or a new one) and a request id, both sent
  back as headers;
- the body read under a size limit;
- the bearer JWT checked (HS256 through PyJWT, decoded once per token and cached, as faas's
  verifier does);
- the body parsed with orjson, validated as faas's own `ChatCompletionBody` and dumped for the
  upstream call, which carries the deployment's API key;
- a per-tenant requests-per-minute window checked and counted (a dict, in memory);
- the upstream call over one aiohttp session, its answer parsed and encoded again, its cost
  priced from the token counts;
- two token-usage records and one request-duration record, with the attributes faas records
  (five and three), through the meter faas uses (`faas.integrations.histograms`: the SDK's
  meter with histograms aggregated by faas and exported at collection);
- a usage event with the 24 fields of faas's, in an envelope like its bus's (id, type, tenant,
  time), encoded and handed to an in-process queue that a consumer task decodes (faas's
  in-process bus delivers to a subscriber the same way);
- one request-log line through faas's `RequestLog` (buffered, flushed every 0.25 s).

What it leaves out, each of which faas pays for: admission beyond one counter (faas reserves
and reconciles tokens and spend at several levels, and estimates the prompt's tokens against
the model's context window), the response cache lookup, routing and fallback over deployments
with their circuit breakers, input rules, trace context, idempotency, error handling (a failed
upstream or an invalid body ends the request with uvicorn's 500 here) and everything a framework
gives (routing tables, exception handlers, OpenAPI). So its cost per request is a floor under
part of the work, not a gateway: `bench/gateway_floor_probe.py` measures it beside faas and the
bare proxy.

    python bench/lean_gateway.py --upstream http://127.0.0.1:PORT --port PORT
    (FAAS_JWT_SECRET: the secret the bearer tokens are signed with)
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from typing import Any

import jwt
import orjson

from bare_proxy import BareProxy, Scope, answer_with, read_body, serve
from faas.integrations.otel import setup_telemetry
from faas.services.gateway_service.openai_routes import ChatCompletionBody
from faas.shared.logging import RequestLog

RPM = 10_000_000
MAX_BODY_BYTES = 1 << 20
PRICE_PER_TOKEN = (0.15e-6, 0.60e-6)  # USD per input and per output token
UPSTREAM_KEY = "Bearer sk-mock-upstream"
_JSON = [(b"content-type", b"application/json")]


class LeanGateway(BareProxy):
    def __init__(self, upstream: str, secret: str) -> None:
        super().__init__(upstream)
        self.secret = secret
        self.claims: dict[str, dict[str, Any]] = {}
        self.windows: dict[tuple[str, int], int] = {}
        meter = setup_telemetry("lean", set_global=False).meter
        self.token_usage = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
        self.duration = meter.create_histogram("http.server.request.duration", unit="s")
        self.events: asyncio.Queue[bytes] = asyncio.Queue()
        self.consumer: asyncio.Task[None] | None = None
        self.log = RequestLog()

    def started(self) -> None:
        self.consumer = asyncio.get_running_loop().create_task(self._drain())

    def stopping(self) -> None:
        if self.consumer is not None:
            self.consumer.cancel()

    async def _drain(self) -> None:
        while True:
            orjson.loads(await self.events.get())

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["path"] == "/livez":
            await _answer(send, 200, b"{}", [])
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        given = headers.get(b"x-correlation-id")
        ids = {"correlation_id": given.decode() if given else os.urandom(16).hex()}
        ids["request_id"] = os.urandom(16).hex()
        id_headers = [
            (b"x-correlation-id", ids["correlation_id"].encode()),
            (b"x-request-id", ids["request_id"].encode()),
        ]
        body = await read_body(receive)
        if len(body) > MAX_BODY_BYTES:
            await _answer(send, 413, b'{"error":{"code":"payload_too_large"}}', id_headers)
            return
        claims = self._claims(headers.get(b"authorization", b"").decode())
        if claims is None:
            await _answer(send, 401, b'{"error":{"code":"unauthenticated"}}', id_headers)
            return
        tenant = claims["tenant_id"]
        window = (tenant, int(time.time() // 60))
        if self.windows.get(window, 0) >= RPM:
            await _answer(send, 429, b'{"error":{"code":"rate_limited"}}', id_headers)
            return
        self.windows[window] = self.windows.get(window, 0) + 1
        parsed = ChatCompletionBody.model_validate(orjson.loads(body))
        upstream_body = orjson.dumps(parsed.model_dump(exclude_none=True, exclude={"cache"}))
        assert self.session is not None
        sent = time.perf_counter()
        async with self.session.post(
            self.upstream + scope["path"],
            data=upstream_body,
            headers={"content-type": "application/json", "authorization": UPSTREAM_KEY},
        ) as upstream:
            payload = await upstream.read()
            status = upstream.status
        upstream_s = time.perf_counter() - sent
        answer = orjson.loads(payload)
        usage = answer.get("usage") or {}
        outcome = "ok" if status < 400 else "error"
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": parsed.model,
            "faas.status": outcome,
            "faas.tenant": tenant,
        }
        prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        self.token_usage.record(prompt, attributes | {"gen_ai.token.type": "input"})
        self.token_usage.record(completion, attributes | {"gen_ai.token.type": "output"})
        call = _Call(parsed.model, outcome, usage, started, upstream_s, ids)
        self.events.put_nowait(orjson.dumps(_usage_event(call, claims)))
        await _answer(send, status, orjson.dumps(answer), id_headers)
        self.duration.record(
            time.perf_counter() - started,
            {
                "http.request.method": scope["method"],
                "http.route": scope["path"],
                "http.response.status_code": status,
            },
        )
        self.log.write(
            {
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                "tenant_id": tenant,
            }
        )

    def _claims(self, authorization: str) -> dict[str, Any] | None:
        token = authorization.removeprefix("Bearer ")
        claims = self.claims.get(token)
        if claims is None:
            try:
                claims = jwt.decode(token, self.secret, algorithms=["HS256"])
            except jwt.PyJWTError:
                return None
            self.claims[token] = claims
        return claims if claims.get("exp", 0) >= time.time() else None


class _Call:
    __slots__ = ("ids", "model", "started", "status", "upstream_s", "usage")

    def __init__(
        self,
        model: str,
        status: str,
        usage: dict[str, Any],
        started: float,
        upstream_s: float,
        ids: dict[str, str],
    ) -> None:
        self.model, self.status, self.usage = model, status, usage
        self.started, self.upstream_s, self.ids = started, upstream_s, ids


def _usage_event(call: _Call, claims: dict[str, Any]) -> dict[str, Any]:
    """faas's `gateway.usage` event: its 24 fields, in an envelope like its bus's."""
    usage = call.usage
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    data = {
        "operation": "chat",
        "model": call.model,
        "deployment": call.model,
        "provider": "openai",
        "upstream_model": call.model,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": usage.get("total_tokens", prompt + completion),
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "usage_source": "upstream",
        "cost_usd": prompt * PRICE_PER_TOKEN[0] + completion * PRICE_PER_TOKEN[1],
        "latency_ms": round((time.perf_counter() - call.started) * 1000, 3),
        "upstream_ms": round(call.upstream_s * 1000, 3),
        "status": call.status,
        "error_code": None,
        "cached": False,
        "stream": False,
        "user_id": claims.get("sub"),
        "correlation_id": call.ids["correlation_id"],
        "request_id": call.ids["request_id"],
        "key_id": None,
        "team": claims.get("team"),
        "tags": {},
    }
    return {
        "id": os.urandom(16).hex(),
        "type": "gateway.usage",
        "tenant_id": claims["tenant_id"],
        "occurred_at": datetime.now(UTC),
        "data": data,
    }


async def _answer(send: Any, status: int, content: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    await answer_with(send, status, content, [*_JSON, *extra])


def main() -> None:
    secret = os.environ["FAAS_JWT_SECRET"]
    serve(
        lambda upstream: LeanGateway(upstream, secret), __doc__.splitlines()[0] if __doc__ else None
    )


if __name__ == "__main__":
    main()
