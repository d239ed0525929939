"""A deterministic chat provider without I/O, for tests and offline demos.

Every answer is visibly a mock: text starts with "[mock]", JSON answers carry `"mock": true`,
and `system_fingerprint` is "faas-mock".
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from faas.services.gateway_service.config import Deployment
from faas.services.gateway_service.providers.base import (
    ChatRequest,
    ChatResult,
    StreamEvent,
    Usage,
)
from faas.services.gateway_service.providers.tokens import (
    count_chat_tokens,
    count_tokens,
    truncate_tokens,
)

FINGERPRINT = "faas-mock"
_SENTENCES = (
    "This is a canned answer from the mock model.",
    "The mock model has thought about this very carefully.",
    "Here is a deterministic reply for testing.",
    "No real model was consulted for this answer.",
    "The offline demo model answers without a network.",
    "A mock answer, identical every time you ask.",
)
_WORDS_PER_CHUNK = 3


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [str(p.get("text", "")) for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if p)
    return ""


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _tool_name(tool: Any) -> str:
    if not isinstance(tool, dict):
        return ""
    function = tool.get("function")
    return str(function.get("name", "")) if isinstance(function, dict) else ""


class MockProvider:
    name = "mock"

    def _answer(self, request: ChatRequest, deployment: Deployment) -> dict[str, Any]:
        """The whole response, as a `chat.completion` body."""
        messages = request.messages
        params = request.params
        last = messages[-1] if messages else {}
        text = message_text(last)
        digest = _digest(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS).decode())
        sentence = _SENTENCES[digest[0] % len(_SENTENCES)]
        tools = params.get("tools") or []
        message: dict[str, Any] = {"role": "assistant", "content": None}
        finish_reason = "stop"

        called = None
        if tools and last.get("role") == "user":
            lowered = text.lower()
            called = next((n for n in map(_tool_name, tools) if n and n.lower() in lowered), None)
        if called is not None:
            message["tool_calls"] = [
                {
                    "id": f"call_mock_{digest[:6].hex()}",
                    "type": "function",
                    "function": {"name": called, "arguments": "{}"},
                }
            ]
            finish_reason = "tool_calls"
            completion_tokens = count_tokens(called) + 1
        else:
            response_format = params.get("response_format") or {}
            if response_format.get("type") in ("json_object", "json_schema"):
                body = {"mock": True, "answer": sentence, "echo": text[:200]}
                content = orjson.dumps(body).decode()
            else:
                content = f"[mock] {sentence} You said: {text[:200]}"
            limit = params.get("max_completion_tokens") or params.get("max_tokens")
            completion_tokens = count_tokens(content)
            if isinstance(limit, int) and 0 < limit < completion_tokens:
                content = truncate_tokens(content, limit)
                completion_tokens = limit
                finish_reason = "length"
            message["content"] = content

        prompt_tokens = count_chat_tokens(messages, tools or None)
        return {
            "id": f"chatcmpl-mock-{digest.hex()[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": deployment.model or "mock",
            "system_fingerprint": FINGERPRINT,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    async def chat(self, request: ChatRequest, deployment: Deployment) -> ChatResult:
        body = self._answer(request, deployment)
        return ChatResult(body=body, usage=Usage.from_openai(body["usage"]))

    async def stream(
        self, request: ChatRequest, deployment: Deployment
    ) -> AsyncIterator[StreamEvent]:
        body = self._answer(request, deployment)
        delay = float(deployment.options.get("stream_delay_ms", 0)) / 1000.0
        choice = body["choices"][0]
        message = choice["message"]
        head = {k: body[k] for k in ("id", "created", "model", "system_fingerprint")}
        head["object"] = "chat.completion.chunk"

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            return orjson.dumps({**head, "choices": choices})

        yield StreamEvent(data=chunk({"role": "assistant", "content": ""}))
        if message.get("tool_calls"):
            call = message["tool_calls"][0]
            delta = {"tool_calls": [{"index": 0, **call}]}
            yield StreamEvent(data=chunk(delta), has_content=True)
        else:
            words = str(message["content"]).split(" ")
            for i in range(0, len(words), _WORDS_PER_CHUNK):
                if delay:
                    await asyncio.sleep(delay)
                piece = " ".join(words[i : i + _WORDS_PER_CHUNK])
                piece = piece if i == 0 else " " + piece
                yield StreamEvent(data=chunk({"content": piece}), has_content=True)
        finish = choice["finish_reason"]
        yield StreamEvent(data=chunk({}, finish), finish_reason=finish)
        usage_chunk = orjson.dumps({**head, "choices": [], "usage": body["usage"]})
        yield StreamEvent(data=usage_chunk, usage=Usage.from_openai(body["usage"]))

    async def health(self, deployment: Deployment) -> bool:
        return True

    async def aclose(self) -> None:
        return None
