"""OpenAI's Responses API over the chat pipeline: a request becomes a chat completion (the
stored conversation of `previous_response_id` first), run by `GatewayService.complete` or
`open_stream` with operation "responses" — so routing, fallback, limits, budgets, cache and
usage events are the chat path's — and the answer becomes a Responses object, stored per
tenant when `store` is on (the default)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from faas.services.gateway_service.accounting import CallRecord
from faas.services.gateway_service.responses_items import Item, derived_id, input_items, new_id
from faas.services.gateway_service.responses_models import ResponsesBody
from faas.services.gateway_service.responses_store import ResponseStore, StoredResponse
from faas.services.gateway_service.responses_stream import ResponseStream
from faas.services.gateway_service.responses_translate import chat_body, completed_response
from faas.shared.context import Identity
from faas.shared.exceptions import NotFound, ValidationFailed

if TYPE_CHECKING:
    from faas.services.gateway_service.service import GatewayService

MAX_PAGE = 100


class _Prepared:
    """A request made ready to run: its new input items, the conversation, the chat body."""

    def __init__(
        self,
        request: ResponsesBody,
        items: list[Item],
        previous: StoredResponse | None,
        size: int,
    ) -> None:
        self.request = request
        self.items = items
        self.context = previous.conversation if previous is not None else []
        self.size = size
        self.body = chat_body(request, [*self.context, *items])

    def record(self, response: dict[str, Any]) -> StoredResponse:
        return StoredResponse(response, self.items, self.context, self.size)


class ResponsesApi:
    def __init__(self, gateway: GatewayService, store: ResponseStore) -> None:
        self.gateway = gateway
        self.store = store

    async def _prepare(self, identity: Identity, request: ResponsesBody) -> _Prepared:
        previous = None
        if request.previous_response_id is not None:
            previous = await self.store.get(identity.tenant_id, request.previous_response_id)
            if previous is None:
                raise NotFound(
                    f"Previous response with id '{request.previous_response_id}' not found.",
                    details={"param": "previous_response_id"},
                )
        items = input_items(request.input)
        if not items and previous is None:
            raise ValidationFailed("input: must not be empty", details={"param": "input"})
        size = self.store.check_size(previous, items) if request.store else 0
        return _Prepared(request, items, previous, size)

    async def create(
        self, identity: Identity, request: ResponsesBody, idempotency_key: str | None = None
    ) -> tuple[dict[str, Any], CallRecord]:
        """A finished response (not streamed), stored when `store` is on. Under an
        Idempotency-Key a retry replays the first answer, with the same ids."""
        prepared = await self._prepare(identity, request)
        created_at = int(time.time())
        completion = await self.gateway.complete(
            identity, prepared.body, idempotency_key=idempotency_key, operation="responses"
        )
        response_id = (
            new_id("resp")
            if idempotency_key is None
            else derived_id("resp", f"{identity.tenant_id}\0{idempotency_key}")
        )
        response = completed_response(
            request, response_id, completion.body, completion.call.usage, created_at
        )
        if request.store:
            await self.store.put(identity.tenant_id, prepared.record(response))
        return response, completion.call

    async def stream(
        self, identity: Identity, request: ResponsesBody
    ) -> tuple[AsyncIterator[bytes], CallRecord]:
        """The response as Responses events; stored, when `store` is on, before the last event
        goes out (so a follow-up sent on `response.completed` finds it)."""
        prepared = await self._prepare(identity, request)
        chunks, call = await self.gateway.open_stream(
            identity, prepared.body, include_usage=True, operation="responses"
        )

        async def keep(response: dict[str, Any]) -> None:
            if request.store:
                await self.store.put(identity.tenant_id, prepared.record(response))

        run = ResponseStream(request, new_id("resp"), call, keep)
        return run.run(chunks), call

    async def retrieve(self, identity: Identity, response_id: str) -> StoredResponse:
        record = await self.store.get(identity.tenant_id, response_id)
        if record is None:
            raise NotFound(f"Response with id '{response_id}' not found.")
        return record

    async def delete(self, identity: Identity, response_id: str) -> dict[str, Any]:
        if not await self.store.delete(identity.tenant_id, response_id):
            raise NotFound(f"Response with id '{response_id}' not found.")
        return {"id": response_id, "object": "response", "deleted": True}

    async def input_items(
        self,
        identity: Identity,
        response_id: str,
        *,
        limit: int = 20,
        order: str = "desc",
        after: str | None = None,
    ) -> dict[str, Any]:
        """A page of the response's own input items, newest first unless `order` is "asc"."""
        items = (await self.retrieve(identity, response_id)).input
        ordered = items if order == "asc" else items[::-1]
        if after is not None:
            ids = [item["id"] for item in ordered]
            if after not in ids:
                raise NotFound(f"No input item with id '{after}' in this response.")
            ordered = ordered[ids.index(after) + 1 :]
        page = ordered[: max(1, min(limit, MAX_PAGE))]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(ordered) > len(page),
        }
