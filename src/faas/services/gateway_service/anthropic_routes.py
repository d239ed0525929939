"""Anthropic's Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`) on the
gateway's pipeline: translated to an OpenAI chat call (`operation="messages"`), the answer and
the stream translated back. Auth is the platform's token as `x-api-key` or bearer; any
`anthropic-version` is accepted. Errors take Anthropic's shape (`anthropic_errors.py`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from faas.services.gateway_service import request_tags
from faas.services.gateway_service.anthropic_models import (
    COUNT_TOKENS_EXAMPLE,
    MESSAGES_EXAMPLE,
    CountTokensBody,
    MessagesBody,
)
from faas.services.gateway_service.anthropic_stream import MessageStream, anthropic_events
from faas.services.gateway_service.anthropic_translate import (
    openai_messages,
    openai_tools,
    to_anthropic,
    to_openai,
)
from faas.services.gateway_service.headers import SSE_HEADERS, gateway_headers
from faas.services.gateway_service.openai_routes import (
    IDEMPOTENCY_HEADER,
    MAX_IDEMPOTENCY_KEY,
    json_body_doc,
)
from faas.shared.api import caller
from faas.shared.context import current_context
from faas.shared.cpu import run_cpu
from faas.shared.direct_routes import direct
from faas.shared.exceptions import BadRequest, UndecodableBody, ValidationFailed
from faas.shared.middleware import scope_header
from faas.shared.tokens import count_chat_tokens

if TYPE_CHECKING:
    from faas.services.gateway_service.service import GatewayService

M = TypeVar("M", bound=BaseModel)
_IDEMPOTENCY = IDEMPOTENCY_HEADER.encode()  # as the ASGI scope holds header names


async def _body(request: Request, model: type[M]) -> M:
    data = request.scope.get("state", {}).get("faas_json")
    if data is None:  # not decoded by InputRulesMiddleware (no JSON content type)
        raw = await request.body()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UndecodableBody(f"request body is not valid JSON: {exc}") from exc
    request_tags.begin_request(request.scope, data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadRequest(f"{where}: {first['msg']}", details={"param": where}) from exc


@contextmanager
def _as_bad_request() -> Iterator[None]:
    """The pipeline's 422s are Anthropic's 400 `invalid_request_error`."""
    try:
        yield
    except ValidationFailed as exc:
        raise BadRequest(exc.message, details=exc.details) from exc


def _count(body: CountTokensBody) -> int:
    return count_chat_tokens(openai_messages(body), openai_tools(body))


def _size(request: Request) -> int:
    """The body's size, to choose between translating inline and in a thread."""
    declared = request.headers.get("content-length", "")
    return int(declared) if declared.isdigit() else 0


def _headers(base: dict[str, str]) -> dict[str, str]:
    ctx = current_context()
    return base | ({"request-id": ctx.request_id} if ctx else {})


def build_anthropic_router(service: GatewayService) -> APIRouter:
    router = APIRouter(prefix="/v1/messages", tags=["anthropic-compatible"])

    @router.post("", openapi_extra=json_body_doc(MessagesBody, MESSAGES_EXAMPLE))
    @direct
    async def messages(request: Request) -> Response:
        identity = caller()
        parsed = await _body(request, MessagesBody)
        key = scope_header(request.scope, _IDEMPOTENCY)
        if key is not None and len(key) > MAX_IDEMPOTENCY_KEY:
            raise BadRequest(f"Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY} characters")
        body = await run_cpu(_size(request), to_openai, parsed)
        if parsed.stream:
            with _as_bad_request():
                prompt = await run_cpu(_size(request), _count, parsed)
                chunks, call = await service.open_stream(
                    identity, body, include_usage=True, operation="messages"
                )
            stream = MessageStream(
                model=parsed.model, input_tokens=prompt, stop_sequences=parsed.stop_sequences
            )
            headers = _headers(gateway_headers(request, call) | SSE_HEADERS)
            return StreamingResponse(
                anthropic_events(chunks, stream), media_type="text/event-stream", headers=headers
            )
        with _as_bad_request():
            completion = await service.complete(
                identity, body, cache=parsed.cache, idempotency_key=key, operation="messages"
            )
        message = to_anthropic(
            completion.body, completion.call.usage, model=parsed.model, body=parsed
        )
        headers = gateway_headers(request, completion.call, replayed=completion.replayed)
        return Response(
            orjson.dumps(message), media_type="application/json", headers=_headers(headers)
        )

    count_doc = json_body_doc(CountTokensBody, COUNT_TOKENS_EXAMPLE)

    @router.post("/count_tokens", openapi_extra=count_doc)
    async def count_tokens(request: Request) -> Response:
        caller()
        parsed = await _body(request, CountTokensBody)
        with _as_bad_request():
            service.model_router.resolve(parsed.model, "chat")
        tokens = await run_cpu(_size(request), _count, parsed)
        return Response(
            orjson.dumps({"input_tokens": tokens}),
            media_type="application/json",
            headers=_headers({}),
        )

    return router
