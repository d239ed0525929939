"""OpenAI's Responses API: `POST /v1/responses` (streamed or not), and a stored response's
`GET`, `DELETE` and `input_items`. Errors take OpenAI's shape (the `/v1/` renderer)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import orjson
from fastapi import APIRouter, Header, Path, Query
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from faas.services.gateway_service.headers import SSE_HEADERS, gateway_headers
from faas.services.gateway_service.openai_routes import json_body_doc, request_json, validated_body
from faas.services.gateway_service.responses_models import (
    RESPONSE_ID_PATTERN,
    RESPONSES_EXAMPLE,
    ResponsesBody,
)
from faas.shared.api import caller

if TYPE_CHECKING:
    from faas.services.gateway_service.service import GatewayService

ResponseId = Annotated[str, Path(pattern=RESPONSE_ID_PATTERN, max_length=101)]


def _json_response(body: object, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


def build_responses_router(service: GatewayService) -> APIRouter:
    router = APIRouter(prefix="/v1/responses", tags=["openai-compatible"])
    responses = service.responses

    # Parsed here rather than by FastAPI so that errors take OpenAI's shape (`param`).
    @router.post("", openapi_extra=json_body_doc(ResponsesBody, RESPONSES_EXAMPLE))
    async def create_response(
        request: Request, idempotency_key: str | None = Header(None, max_length=255)
    ) -> Response:
        identity = caller()
        parsed: ResponsesBody = validated_body(ResponsesBody, await request_json(request))
        if parsed.stream:
            events, call = await responses.stream(identity, parsed)
            headers = gateway_headers(request, call) | SSE_HEADERS
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        body, call = await responses.create(identity, parsed, idempotency_key)
        return _json_response(body, gateway_headers(request, call))

    @router.get("/{response_id}")
    async def get_response(response_id: ResponseId) -> Response:
        record = await responses.retrieve(caller(), response_id)
        return _json_response(record.response)

    @router.delete("/{response_id}")
    async def delete_response(response_id: ResponseId) -> Response:
        return _json_response(await responses.delete(caller(), response_id))

    @router.get("/{response_id}/input_items")
    async def list_input_items(
        response_id: ResponseId,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        order: Literal["asc", "desc"] = "desc",
        after: Annotated[str | None, Query(max_length=128)] = None,
    ) -> Response:
        page = await responses.input_items(
            caller(), response_id, limit=limit, order=order, after=after
        )
        return _json_response(page)

    return router
