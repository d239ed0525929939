"""Stored responses (`store: true`), per tenant, in the key/value backend with a TTL.

A record holds the response, its own input items, and the conversation before them (`context`:
the input and output items of every response up the `previous_response_id` chain). Each record
is therefore self-contained: a follow-up needs one read, and a chain stays usable for as long as
its newest response lives even when older ones expire or are deleted. The price is that a long
chain repeats its history in each record, which `max_bytes` bounds: a follow-up whose
conversation would pass it is refused (413) before any model is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from faas.backends.kv import KeyValueStore
from faas.services.gateway_service.responses_items import Item
from faas.shared.cpu import run_cpu
from faas.shared.exceptions import PayloadTooLarge

NAMESPACE = "gateway-responses"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response: dict[str, Any]
    input: list[Item]
    context: list[Item]
    size: int = 0  # bytes the record takes in the store

    @property
    def conversation(self) -> list[Item]:
        """Everything a follow-up continues from: the history, the input, the output."""
        return [*self.context, *self.input, *self.response["output"]]


def _encode(record: StoredResponse) -> bytes:
    body = {"response": record.response, "input": record.input, "context": record.context}
    return orjson.dumps(body)


def _decode(raw: bytes) -> StoredResponse:
    body = orjson.loads(raw)
    return StoredResponse(body["response"], body["input"], body["context"], len(raw))


class ResponseStore:
    def __init__(self, kv: KeyValueStore, *, ttl_s: float, max_bytes: int) -> None:
        self.kv = kv
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes

    @staticmethod
    def _key(tenant_id: str, response_id: str) -> str:
        return f"faas:{tenant_id}:{NAMESPACE}:{response_id}"

    async def get(self, tenant_id: str, response_id: str) -> StoredResponse | None:
        raw = await self.kv.get(self._key(tenant_id, response_id))
        return None if raw is None else await run_cpu(len(raw), _decode, raw)

    async def put(self, tenant_id: str, record: StoredResponse) -> None:
        size = record.size or self.max_bytes
        raw = await run_cpu(size, _encode, record)
        await self.kv.set(self._key(tenant_id, record.response["id"]), raw, self.ttl_s)

    async def delete(self, tenant_id: str, response_id: str) -> bool:
        return await self.kv.delete(self._key(tenant_id, response_id)) > 0

    def check_size(self, previous: StoredResponse | None, items: list[Item]) -> int:
        """The bytes a record of this conversation takes before its output; 413 past the bound."""
        size = (previous.size if previous is not None else 0) + len(orjson.dumps(items))
        if size > self.max_bytes:
            raise PayloadTooLarge(
                f"this conversation would take {size} bytes to store, more than the "
                f"{self.max_bytes} allowed (FAAS_GATEWAY_RESPONSES_MAX_BYTES): start a new "
                "conversation, or send store: false",
                details={"param": "previous_response_id", "limit_bytes": self.max_bytes},
            )
        return size
