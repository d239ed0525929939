"""OpenAI-compatible routes (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
`/v1/models`) and rerank (`/v1/rerank`, Cohere's/Jina's shape): their request and response
shapes, and OpenAI's error shape with the right statuses."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from faas.services.gateway_service import request_tags
from faas.services.gateway_service.accounting import CallRecord
from faas.services.gateway_service.choices import MAX_CHOICES, complete_choices, settle
from faas.services.gateway_service.completions import (
    COMPLETION_EXAMPLE,
    MAX_FANOUT,
    CompletionBody,
    completion_body,
    text_stream,
)
from faas.services.gateway_service.headers import SSE_HEADERS, gateway_headers
from faas.services.gateway_service.models import MAX_MESSAGES, MAX_OUTPUT_TOKENS, CacheOptions
from faas.services.gateway_service.offload import vector_size
from faas.services.gateway_service.providers.base import EmbeddingResult
from faas.services.gateway_service.rerank import RERANK_EXAMPLE, RerankBody, rerank_body
from faas.services.gateway_service.routing_table import ModelConfig
from faas.services.gateway_service.token_inputs import embedding_inputs, input_texts
from faas.shared.api import caller
from faas.shared.cpu import run_cpu
from faas.shared.direct_routes import body_doc, direct
from faas.shared.exceptions import NotFound, UndecodableBody, ValidationFailed
from faas.shared.middleware import scope_header

if TYPE_CHECKING:
    from faas.services.gateway_service.service import GatewayService


class ChatCompletionBody(BaseModel):
    """What the gateway checks itself; every other OpenAI parameter passes through."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=128)
    messages: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=MAX_CHOICES, description="choices (fanned out)")
    max_tokens: int | None = Field(None, gt=0, le=MAX_OUTPUT_TOKENS)
    max_completion_tokens: int | None = Field(None, gt=0, le=MAX_OUTPUT_TOKENS)
    tools: list[dict[str, Any]] | None = Field(None, max_length=128)
    cache: CacheOptions | None = Field(None, description="faas extension: response caching")


class EmbeddingBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=128)
    input: Any = Field(
        description="a string, a list of strings, a list of token ids or a list of such lists"
    )
    encoding_format: Literal["float", "base64"] = "float"


CHAT_EXAMPLE = {
    "model": "chat-default",
    "messages": [{"role": "user", "content": "In one sentence, what is a semantic cache?"}],
}
EMBEDDING_EXAMPLE = {"model": "embed-default", "input": ["faas serves AI components"]}


IDEMPOTENCY_HEADER = "idempotency-key"
_IDEMPOTENCY = IDEMPOTENCY_HEADER.encode()  # as the ASGI scope holds header names
MAX_IDEMPOTENCY_KEY = 255
_IDEMPOTENCY_DOC = {
    "name": IDEMPOTENCY_HEADER,
    "in": "header",
    "required": False,
    "description": "replays the stored answer of an earlier call with the same key",
    "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY},
}


def json_body_doc(
    model: type[BaseModel], example: dict[str, Any], idempotent: bool = False
) -> dict[str, Any]:
    """The request body of a route that parses it itself (and the idempotency header it reads
    itself), for the OpenAPI document."""
    return body_doc(model, example, [_IDEMPOTENCY_DOC] if idempotent else ())


def idempotency_header(request: Request) -> str | None:
    value = scope_header(request.scope, _IDEMPOTENCY)
    if value is not None and len(value) > MAX_IDEMPOTENCY_KEY:
        raise _invalid(IDEMPOTENCY_HEADER, f"at most {MAX_IDEMPOTENCY_KEY} characters")
    return value


async def request_json(request: Request) -> Any:
    """The body of every /v1 call, whose spend attribution tags it also starts."""
    checked = request.scope.get("state", {}).get("faas_json")
    if checked is None:  # else decoded once by InputRulesMiddleware
        raw = await request.body()
        try:
            checked = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UndecodableBody(f"request body is not valid JSON: {exc}") from exc
    request_tags.begin_request(request.scope, checked)
    return checked


def validated_body(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"])
        raise ValidationFailed(f"{param}: {first['msg']}", details={"param": param}) from exc


def embeddings_body(result: EmbeddingResult, call: CallRecord, *, base64_vectors: bool) -> bytes:
    """OpenAI's embeddings response, encoded (vectors as little-endian float32 in base64 when
    asked)."""
    data = []
    for index, vector in enumerate(result.vectors):
        embedding: Any = vector
        if base64_vectors:
            embedding = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    usage = call.usage
    usage_view = {
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "total_tokens": usage.total_tokens if usage else 0,
    }
    body = {"object": "list", "data": data, "model": call.model, "usage": usage_view}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _invalid(param: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{param}: {message}", details={"param": param})


def _model_entry(model: ModelConfig) -> dict[str, Any]:
    return {
        "id": model.name,
        "object": "model",
        "created": 0,
        "owned_by": "faas",
        "kind": model.kind,
    }


def build_openai_router(service: GatewayService) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["openai-compatible"])

    # The bodies are parsed here rather than by FastAPI, so that errors take OpenAI's shape
    # (`param`): their schema is declared for the docs.
    @router.post(
        "/chat/completions", openapi_extra=json_body_doc(ChatCompletionBody, CHAT_EXAMPLE, True)
    )
    @direct
    async def chat_completions(request: Request) -> Response:
        identity = caller()
        idempotency_key = idempotency_header(request)
        parsed: ChatCompletionBody = validated_body(ChatCompletionBody, await request_json(request))
        body = parsed.model_dump(exclude_none=True, exclude={"cache"})
        n = parsed.n or 1
        if parsed.stream:
            if n > 1:
                raise _invalid("n", "n > 1 is supported without stream only")
            include_usage = bool((parsed.stream_options or {}).get("include_usage"))
            chunks, call = await service.open_stream(identity, body, include_usage=include_usage)
            headers = gateway_headers(request, call) | SSE_HEADERS
            return StreamingResponse(chunks, media_type="text/event-stream", headers=headers)
        completion = await complete_choices(
            service, identity, body, n, cache=parsed.cache, idempotency_key=idempotency_key
        )
        headers = gateway_headers(request, completion.call, replayed=completion.replayed)
        return Response(
            orjson.dumps(completion.body), media_type="application/json", headers=headers
        )

    @router.post("/embeddings", openapi_extra=json_body_doc(EmbeddingBody, EMBEDDING_EXAMPLE))
    @direct
    async def embeddings(request: Request) -> Response:
        identity = caller()
        parsed: EmbeddingBody = validated_body(EmbeddingBody, await request_json(request))
        texts, token_ids = await embedding_inputs(parsed.input, "input")
        result, call = await service.embed(
            identity, texts, parsed.model, field="input", token_ids=token_ids
        )

        def encode() -> bytes:
            return embeddings_body(result, call, base64_vectors=parsed.encoding_format == "base64")

        # 2048 vectors of 384 floats take ~65 ms to encode: not on the loop.
        content = await run_cpu(vector_size(result.vectors), encode)
        return Response(
            content, media_type="application/json", headers=gateway_headers(request, call)
        )

    _add_completions(router, service)
    _add_rerank_and_models(router, service)
    return router


def _add_completions(router: APIRouter, service: GatewayService) -> None:
    @router.post(
        "/completions", openapi_extra=json_body_doc(CompletionBody, COMPLETION_EXAMPLE, True)
    )
    @direct
    async def completions(request: Request) -> Response:
        identity = caller()
        idempotency_key = idempotency_header(request)
        parsed: CompletionBody = validated_body(CompletionBody, await request_json(request))
        prompts = await input_texts(parsed.prompt, "prompt")
        if len(prompts) * parsed.n > MAX_FANOUT:
            raise _invalid("prompt", f"at most {MAX_FANOUT} prompts times n per request")
        if parsed.stream:
            if len(prompts) > 1 or parsed.n > 1:
                raise _invalid("stream", "a stream takes one prompt and n = 1")
            include_usage = bool((parsed.stream_options or {}).get("include_usage"))
            chunks, call = await service.open_stream(
                identity,
                parsed.chat_body(prompts[0]),
                include_usage=include_usage,
                operation="completions",
            )
            frames = text_stream(chunks, prompts[0] if parsed.echo else "")
            headers = gateway_headers(request, call) | SSE_HEADERS
            return StreamingResponse(frames, media_type="text/event-stream", headers=headers)
        done = await settle(
            [
                complete_choices(
                    service,
                    identity,
                    parsed.chat_body(prompt),
                    parsed.n,
                    cache=parsed.cache,
                    idempotency_key=f"{idempotency_key}/{i}" if idempotency_key else None,
                    operation="completions",
                )
                for i, prompt in enumerate(prompts)
            ]
        )
        body = completion_body([c.body for c in done], prompts, parsed.n, echo=parsed.echo)
        headers = gateway_headers(request, done[0].call, replayed=done[0].replayed)
        return Response(orjson.dumps(body), media_type="application/json", headers=headers)


def _add_rerank_and_models(router: APIRouter, service: GatewayService) -> None:
    @router.post("/rerank", openapi_extra=json_body_doc(RerankBody, RERANK_EXAMPLE))
    async def rerank(request: Request) -> Response:
        identity = caller()
        parsed: RerankBody = validated_body(RerankBody, await request_json(request))
        documents = parsed.texts()
        result, call = await service.rerank(
            identity, parsed.query, documents, parsed.model, top_n=parsed.top_n
        )
        body = rerank_body(result, call, documents, return_documents=parsed.return_documents)
        return Response(
            orjson.dumps(body),
            media_type="application/json",
            headers=gateway_headers(request, call),
        )

    @router.get("/models/{model_id:path}")
    async def retrieve_model(model_id: str) -> Response:
        visible = {m.name: m for m in await service.visible_models(caller())}
        if model_id not in visible:
            raise NotFound(f"The model '{model_id}' does not exist", details={"param": "model"})
        return Response(
            orjson.dumps(_model_entry(visible[model_id])), media_type="application/json"
        )

    @router.get("/models")
    async def list_models() -> Response:
        data = [_model_entry(m) for m in await service.visible_models(caller())]
        return Response(
            orjson.dumps({"object": "list", "data": data}), media_type="application/json"
        )
