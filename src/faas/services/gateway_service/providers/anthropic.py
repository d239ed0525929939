"""An Anthropic Messages API upstream (api.anthropic.com or anything speaking its API) behind
the gateway's OpenAI-shaped pipeline: requests and answers are translated by
`anthropic_wire.py`, streams event by event. The HTTP side (aiohttp sessions, timeouts, error
classification) is the OpenAI-compatible provider's; only the wire format differs.

Deployment: `provider: anthropic`, `model` (Anthropic's model id), `api_key` (sent as
`x-api-key`; `env:ANTHROPIC_API_KEY` keeps it out of the file), `api_base` (default
https://api.anthropic.com/v1), `options.anthropic_version` (default 2023-06-01).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from faas.services.gateway_service.providers.anthropic_wire import (
    FINISH_REASONS,
    anthropic_request,
    openai_completion,
    openai_usage,
)
from faas.services.gateway_service.providers.base import (
    ChatRequest,
    ChatResult,
    ErrorKind,
    ProviderError,
    StreamEvent,
    Usage,
)
from faas.services.gateway_service.providers.openai import (
    _ERRORS,
    OpenAICompatibleProvider,
    SSEDecoder,
    _json_object,
    _status_error,
    _transport_error,
)
from faas.services.gateway_service.routing_table import Deployment

DEFAULT_BASE = "https://api.anthropic.com/v1"
DEFAULT_VERSION = "2023-06-01"
# Anthropic's error types that are worth trying another deployment for.
_RETRYABLE_ERRORS: dict[str, ErrorKind] = {
    "overloaded_error": "unavailable",
    "rate_limit_error": "rate_limited",
}


class ChunkWriter:
    """Anthropic stream events as OpenAI `chat.completion.chunk` payloads."""

    def __init__(self, model: str) -> None:
        self.head: dict[str, Any] = {
            "id": "chatcmpl-anthropic",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self.usage: dict[str, Any] = {}
        self.tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index
        self.finished = False

    def _chunk(self, delta: dict[str, Any], **choice: Any) -> StreamEvent:
        entry = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None} | choice
        data = orjson.dumps({**self.head, "choices": [entry]})
        has_content = bool(delta.get("content") or delta.get("tool_calls"))
        return StreamEvent(data, has_content=has_content, finish_reason=choice.get("finish_reason"))

    def event(self, event: dict[str, Any]) -> list[StreamEvent]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.head["id"] = f"chatcmpl-{message.get('id') or ''}"
            self.head["model"] = str(message.get("model") or self.head["model"])
            self.usage = dict(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "message_delta":
            return self._message_delta(event)
        if kind == "message_stop":
            usage = openai_usage(self.usage)
            data = orjson.dumps({**self.head, "choices": [], "usage": usage})
            return [StreamEvent(data, usage=Usage.from_openai(usage))]
        if kind == "error":
            raise _stream_error(event)
        return []  # ping, content_block_stop

    def _block_start(self, event: dict[str, Any]) -> list[StreamEvent]:
        block = event.get("content_block") or {}
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": str(block["text"])})]
        if block.get("type") != "tool_use":
            return []
        index = self.tools[int(event.get("index") or 0)] = len(self.tools)
        function = {"name": str(block.get("name") or ""), "arguments": ""}
        call = {"index": index, "id": str(block.get("id") or ""), "type": "function"}
        return [self._chunk({"tool_calls": [call | {"function": function}]})]

    def _block_delta(self, event: dict[str, Any]) -> list[StreamEvent]:
        delta = event.get("delta") or {}
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [self._chunk({"content": str(delta["text"])})]
        if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            index = self.tools.get(int(event.get("index") or 0), 0)
            piece = {"index": index, "function": {"arguments": str(delta["partial_json"])}}
            return [self._chunk({"tool_calls": [piece]})]
        return []

    def _message_delta(self, event: dict[str, Any]) -> list[StreamEvent]:
        delta = event.get("delta") or {}
        self.usage |= {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
        self.finished = True
        finish = FINISH_REASONS.get(str(delta.get("stop_reason")), "stop")
        extra = {"stop_reason": delta["stop_sequence"]} if delta.get("stop_sequence") else {}
        return [self._chunk({}, finish_reason=finish, **extra)]


def _stream_error(event: dict[str, Any]) -> ProviderError:
    error = event.get("error") or {}
    kind: ErrorKind = _RETRYABLE_ERRORS.get(str(error.get("type")), "server")
    message = f"upstream error mid-stream: {error.get('message') or error.get('type')}"
    return ProviderError(kind, message, body=event)


class AnthropicProvider(OpenAICompatibleProvider):
    name = "anthropic"

    def _base(self, deployment: Deployment) -> str:
        return (deployment.api_base or DEFAULT_BASE).rstrip("/")

    def _headers(self, deployment: Deployment) -> dict[str, str]:
        version = str(deployment.options.get("anthropic_version") or DEFAULT_VERSION)
        headers = {"content-type": "application/json", "anthropic-version": version}
        headers |= deployment.headers
        if deployment.api_key is not None:
            headers["x-api-key"] = deployment.api_key.get_secret_value()
        return headers

    async def chat(self, request: ChatRequest, deployment: Deployment) -> ChatResult:
        payload = anthropic_request(request.messages, request.params, deployment)
        content = await self._post("/messages", payload, deployment)
        body, usage = openai_completion(_json_object(content, deployment), int(time.time()))
        return ChatResult(body=body, usage=usage)

    async def stream(
        self, request: ChatRequest, deployment: Deployment
    ) -> AsyncIterator[StreamEvent]:
        payload = anthropic_request(request.messages, request.params, deployment)
        payload["stream"] = True
        base = self._base(deployment)
        writer = ChunkWriter(deployment.model)
        try:
            async with self._session(base).post(
                base + "/messages",
                data=orjson.dumps(payload),
                headers=self._headers(deployment),
                timeout=self._timeout(deployment, total=False),
            ) as response:
                if response.status >= 300:
                    content = await response.read()
                    raise _status_error(response.status, response.headers, content, deployment)
                decoder = SSEDecoder()
                async for raw in response.content.iter_any():
                    for data in decoder.feed(raw):
                        for event in writer.event(_json_object(data, deployment)):
                            yield event
                for data in decoder.close():
                    for event in writer.event(_json_object(data, deployment)):
                        yield event
        except _ERRORS as exc:
            raise _transport_error(exc, deployment) from exc
        if not writer.finished:
            raise ProviderError(
                "server", f"deployment {deployment.id}: stream ended before it was complete"
            )
