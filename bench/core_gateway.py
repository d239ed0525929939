"""faas's gateway service behind one pure ASGI function: what a fused chat path could cost.

`faas serve gateway`'s app, built as faas builds it (settings from the environment, the same
runtime, verifier, tenant limits, pipeline, usage recorder and telemetry), with
`POST /v1/chat/completions` answered by one function in front of it instead of the middleware
stack and the direct route. The function does what the stack does for that request, in one
pass: request and correlation ids (sent back), the body read under the body limit, the bearer
token through faas's verifier, the JSON input rule, `ChatCompletionBody` validated and dumped,
`GatewayService.complete` through `complete_choices` (tenant limits, cache plan, admission,
routing with fallback and breakers, reconcile, usage metrics and event: all faas's own code),
the gateway's headers, the request duration histogram and the request log line. Errors raised
by faas answer in OpenAI's shape through faas's renderer. It leaves out what the chat path needs
only off its common case: codecs (MessagePack / Protobuf), `Idempotency-Key`, streaming, the
SERVER span when traces are exported. Every other request goes to faas's app unchanged.

So the difference between this and `faas serve gateway` is what faas's HTTP layer (six
middlewares, the framework's layers, Starlette's request and response objects, the direct-route
dispatch) costs a chat completion; the difference between this and the bare proxy is what faas's
features, as faas implements them, cost. `bench/gateway_floor_probe.py` measures it beside them.

    python bench/core_gateway.py --port PORT   (the environment of `faas serve gateway`)
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson
import uvicorn
from starlette.requests import Request

from bare_proxy import answer_with, read_body
from faas.app import build_app
from faas.services.gateway_service import request_tags
from faas.services.gateway_service.choices import complete_choices
from faas.services.gateway_service.headers import gateway_headers
from faas.services.gateway_service.openai_errors import openai_error_renderer
from faas.services.gateway_service.openai_routes import ChatCompletionBody, validated_body
from faas.shared.config import load_settings
from faas.shared.context import RequestContext, reset_context, set_context, trace_id
from faas.shared.exceptions import FaaSError, PayloadTooLarge
from faas.shared.input_rules import check_json_body
from faas.shared.logging import RequestLog
from faas.shared.middleware import AuthMiddleware, scope_header

CHAT = "/v1/chat/completions"
_JSON = (b"content-type", b"application/json")


class CoreGateway:
    def __init__(self) -> None:
        settings = load_settings(service_name="gateway")
        self.app = build_app(settings, ["gateway"], server=True)
        self.service = self.app.state.services["gateway"]
        runtime = self.app.state.runtime
        self.verifier = runtime.verifier
        self.duration = runtime.telemetry.http_server_duration
        self.max_bytes = settings.max_body_bytes
        self.log = RequestLog()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != CHAT:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        given = scope_header(scope, b"x-correlation-id")
        ctx = RequestContext(correlation_id=given or trace_id(), request_id=trace_id())
        token = set_context(ctx)
        ids = [
            (b"x-correlation-id", ctx.correlation_id.encode()),
            (b"x-request-id", ctx.request_id.encode()),
        ]
        state = scope.setdefault("state", {})
        state["faas_started"] = start
        status = 500
        tenant = None
        try:
            try:
                identity = await self.verifier.verify(AuthMiddleware._bearer(scope))
                state["faas_auth_ms"] = (time.perf_counter() - start) * 1000
                tenant = identity.tenant_id
                set_context(ctx.with_identity(identity))
                body = await read_body(receive)
                if len(body) > self.max_bytes:
                    raise PayloadTooLarge(f"request body exceeds {self.max_bytes} bytes")
                value = check_json_body(body)
                request_tags.begin_request(scope, value)
                parsed: ChatCompletionBody = validated_body(ChatCompletionBody, value)
                request = parsed.model_dump(exclude_none=True, exclude={"cache"})
                completion = await complete_choices(
                    self.service, identity, request, parsed.n or 1, cache=parsed.cache
                )
            except FaaSError as exc:
                status = exc.status_code
                content, media = openai_error_renderer(scope, exc)
                await answer_with(send, status, content, [(b"content-type", media.encode()), *ids])
                return
            answer = gateway_headers(Request(scope), completion.call)
            extra = [_JSON, *((k.encode(), v.encode()) for k, v in answer.items()), *ids]
            status = 200
            await answer_with(send, status, orjson.dumps(completion.body), extra)
        finally:
            self.duration.record(
                time.perf_counter() - start,
                {
                    "http.request.method": "POST",
                    "http.route": CHAT,
                    "http.response.status_code": status,
                },
            )
            self.log.write(
                {
                    "method": "POST",
                    "path": CHAT,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - start) * 1000, 3),
                    "tenant_id": tenant,
                }
            )
            reset_context(token)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        CoreGateway(),
        host=args.host,
        port=args.port,
        access_log=False,
        log_level="warning",
        lifespan="on",
        proxy_headers=False,  # as `faas serve` runs it
    )


if __name__ == "__main__":
    main()
