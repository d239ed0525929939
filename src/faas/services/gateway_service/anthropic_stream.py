"""The gateway's OpenAI chat stream as Anthropic's event stream: `message_start` and a `ping`,
then per content block `content_block_start`, deltas (`text_delta`, `input_json_delta` for a
tool's arguments) and `content_block_stop`, then `message_delta` (stop reason, usage) and
`message_stop`. A failure after the stream started is an `error` event that ends it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from faas.services.gateway_service.anthropic_errors import anthropic_error_body
from faas.services.gateway_service.anthropic_translate import (
    anthropic_usage,
    message_id,
    stop_reason,
)
from faas.services.gateway_service.providers.base import Usage
from faas.services.gateway_service.providers.openai import SSEDecoder
from faas.shared.tokens import count_tokens

# The gateway's mid-stream error codes (a ProviderError's kind) as Anthropic's error types.
_ERROR_STATUS = {"rate_limited": 429, "unavailable": 529, "timeout": 504}


def sse(event: dict[str, Any]) -> bytes:
    kind = str(event["type"]).encode()
    return b"event: " + kind + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class MessageStream:
    """Turns OpenAI `chat.completion.chunk`s into Anthropic events, one block at a time."""

    def __init__(self, *, model: str, input_tokens: int, stop_sequences: list[str] | None):
        self.model = model
        self.input_tokens = input_tokens
        self.stop_sequences = stop_sequences
        self.index = -1  # the open block's index
        self.open: str | None = None  # "text", or "tool:<OpenAI tool call index>"
        self.finish: str | None = None
        self.matched: Any = None
        self.usage: Usage | None = None
        self.generated: list[str] = []  # for counting when the provider reports no usage

    def start(self) -> list[bytes]:
        message: dict[str, Any] = {
            "id": message_id(),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
        }
        return [sse({"type": "message_start", "message": message}), sse({"type": "ping"})]

    def _switch(self, block: str, content_block: dict[str, Any]) -> list[bytes]:
        events = self._close()
        self.index += 1
        self.open = block
        start = {"type": "content_block_start", "index": self.index}
        events.append(sse(start | {"content_block": content_block}))
        return events

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        return [sse({"type": "content_block_stop", "index": self.index})]

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return sse({"type": "content_block_delta", "index": self.index, "delta": delta})

    def _tool_call(self, call: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        block = f"tool:{call.get('index', 0)}"
        function = call.get("function") or {}
        if self.open != block:
            tool_use = {
                "type": "tool_use",
                "id": str(call.get("id") or f"toolu_{message_id()[4:]}"),
                "name": str(function.get("name") or ""),
                "input": {},
            }
            events += self._switch(block, tool_use)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            self.generated.append(arguments)
            events.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
        return events

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        if chunk.get("usage"):
            self.usage = Usage.from_openai(chunk["usage"])
        events: list[bytes] = []
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.open != "text":
                    events += self._switch("text", {"type": "text", "text": ""})
                self.generated.append(text)
                events.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or []:
                events += self._tool_call(call)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
                self.matched = choice.get("stop_reason")
        return events

    def end(self) -> list[bytes]:
        events = self._close()
        reason, sequence = stop_reason(self.finish or "stop", self.matched, self.stop_sequences)
        usage = self.usage or Usage(
            prompt_tokens=self.input_tokens,
            completion_tokens=count_tokens("".join(self.generated)),
            source="estimated",
        )
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        counts = anthropic_usage(usage)
        events.append(sse({"type": "message_delta", "delta": delta, "usage": counts}))
        events.append(sse({"type": "message_stop"}))
        return events


def error_event(error: Any) -> bytes:
    detail = error if isinstance(error, dict) else {"message": str(error)}
    status = _ERROR_STATUS.get(str(detail.get("code")), 500)
    return sse(anthropic_error_body(status, str(detail.get("message") or "upstream failed")))


async def anthropic_events(
    chunks: AsyncIterator[bytes], stream: MessageStream
) -> AsyncIterator[bytes]:
    """`chunks` (the gateway's OpenAI SSE frames) as Anthropic events; closing this closes
    `chunks`, which settles the call's usage."""
    decoder = SSEDecoder()
    try:
        for event in stream.start():
            yield event
        async for raw in chunks:
            for data in decoder.feed(raw):
                if data.strip() == b"[DONE]":
                    for event in stream.end():
                        yield event
                    return
                chunk = orjson.loads(data)
                if "error" in chunk and "choices" not in chunk:
                    yield error_event(chunk["error"])
                    return
                for event in stream.chunk(chunk):
                    yield event
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
