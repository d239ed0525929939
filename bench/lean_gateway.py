"""How close to the bare proxy a gateway with faas's per-request work can get on this stack.

The bare proxy (bench/bare_proxy.py) forwards bytes. This app is that proxy plus, written as
directly as Python allows, one pure ASGI function per request, the work faas's gateway does for
every chat completion:

- the bearer JWT checked (HS256 through PyJWT, decoded once per token and cached, as faas does);
- the body parsed with orjson and validated as faas's own `ChatCompletionBody`, and dumped for
  the upstream call;
- a per-tenant requests-per-minute window checked and counted (a dict, in memory);
- the upstream call over one aiohttp session, its answer parsed and encoded again;
- two token-usage histogram records and one request-duration record through the OpenTelemetry
  SDK (the reader and exemplar filter faas uses);
- a usage event of the same fields as faas's, encoded and handed to an in-process queue that a
  consumer task drains (faas's in-process bus delivers to a subscriber the same way);
- one request-log line through faas's `RequestLog` (buffered, flushed every 0.25 s);
- a request id header on the answer.

What it leaves out: admission beyond one counter (faas reserves and reconciles tokens and
spend at several levels), the response cache lookup, routing and fallback over deployments,
input rules, tracing context, idempotency, and everything a framework gives (routing tables,
exception handlers, OpenAPI). So its cost per request is a floor for these features, not a
gateway: `bench/gateway_floor_probe.py` measures it beside faas and the bare proxy.

    python bench/lean_gateway.py --upstream http://127.0.0.1:PORT --port PORT
    (FAAS_JWT_SECRET: the secret the bearer tokens are signed with)
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import jwt
import orjson
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from bare_proxy import BareProxy, Scope, answer_with, read_body, serve
from faas.services.gateway_service.openai_routes import ChatCompletionBody
from faas.shared.logging import RequestLog

RPM = 10_000_000
_JSON = [(b"content-type", b"application/json")]


class LeanGateway(BareProxy):
    def __init__(self, upstream: str, secret: str) -> None:
        super().__init__(upstream)
        self.secret = secret
        self.claims: dict[str, dict[str, Any]] = {}
        self.windows: dict[tuple[str, int], int] = {}
        meter = MeterProvider(
            metric_readers=[InMemoryMetricReader()], exemplar_filter=AlwaysOffExemplarFilter()
        ).get_meter("lean")
        self.token_usage = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
        self.duration = meter.create_histogram("http.server.request.duration", unit="s")
        self.events: asyncio.Queue[bytes] = asyncio.Queue()
        self.consumer: asyncio.Task[None] | None = None
        self.log = RequestLog()

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
        if self.consumer is None:
            self.consumer = asyncio.get_running_loop().create_task(self._drain())
        started = time.perf_counter()
        body = await read_body(receive)
        headers = dict(scope["headers"])
        claims = self._claims(headers.get(b"authorization", b"").decode())
        if claims is None:
            await _answer(send, 401, b'{"error":{"code":"unauthenticated"}}', [])
            return
        tenant = claims["tenant_id"]
        window = (tenant, int(time.time() // 60))
        if self.windows.get(window, 0) >= RPM:
            await _answer(send, 429, b'{"error":{"code":"rate_limited"}}', [])
            return
        self.windows[window] = self.windows.get(window, 0) + 1
        parsed = ChatCompletionBody.model_validate(orjson.loads(body))
        upstream_body = orjson.dumps(parsed.model_dump(exclude_none=True, exclude={"cache"}))
        assert self.session is not None
        url = self.upstream + scope["path"]
        sent = time.perf_counter()
        async with self.session.post(
            url, data=upstream_body, headers={"content-type": "application/json"}
        ) as upstream:
            payload = await upstream.read()
            status = upstream.status
        upstream_s = time.perf_counter() - sent
        answer = orjson.loads(payload)
        usage = answer.get("usage") or {}
        attributes = {"gen_ai.request.model": parsed.model, "faas.tenant": tenant}
        self.token_usage.record(
            usage.get("prompt_tokens", 0), attributes | {"gen_ai.token.type": "input"}
        )
        self.token_usage.record(
            usage.get("completion_tokens", 0), attributes | {"gen_ai.token.type": "output"}
        )
        request_id = os.urandom(8).hex()
        self.events.put_nowait(
            orjson.dumps(
                _usage_event(parsed.model, tenant, usage, started, upstream_s, status, request_id)
            )
        )
        content = orjson.dumps(answer)
        await _answer(send, status, content, [(b"x-request-id", request_id.encode())])
        self.duration.record(time.perf_counter() - started, {"http.route": scope["path"]})
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


def _usage_event(
    model: str,
    tenant: str,
    usage: dict[str, Any],
    started: float,
    upstream_s: float,
    status: int,
    request_id: str,
) -> dict[str, Any]:
    """The fields of faas's `gateway.usage` event, in an envelope like its bus's."""
    data = {
        "operation": "chat",
        "model": model,
        "deployment": model,
        "provider": "openai",
        "upstream_model": model,
        "prompt_tokens": usage.get("prompt_tokens", 0),
        "completion_tokens": usage.get("completion_tokens", 0),
        "total_tokens": usage.get("total_tokens", 0),
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "usage_source": "upstream",
        "cost_usd": 0.0,
        "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        "upstream_ms": round(upstream_s * 1000, 3),
        "status": "ok" if status < 400 else "error",
        "request_id": request_id,
    }
    return {"id": request_id, "type": "gateway.usage", "tenant_id": tenant, "data": data}


async def _answer(send: Any, status: int, content: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    await answer_with(send, status, content, [*_JSON, *extra])


def main() -> None:
    secret = os.environ["FAAS_JWT_SECRET"]
    serve(
        lambda upstream: LeanGateway(upstream, secret), __doc__.splitlines()[0] if __doc__ else None
    )


if __name__ == "__main__":
    main()
