"""A deterministic chat provider without I/O, for tests and offline demos.

Every answer is visibly a mock: text starts with "[mock]", JSON answers carry `"mock": true`,
and `system_fingerprint` is "faas-mock". The same request always gets the same answer.

It reads just enough to let the offline tour show what faas does, by simple word rules:
- with tools offered it honours `tool_choice` (a named function is always called, "required"
  calls one, "none" never), and on "auto" calls one when the question calls for it: a tool it
  names; for arithmetic a calculator (with the expression); for "search"/"find" a search tool;
  else the tool sharing most words with the question; else, for a question, a search tool;
- after tool results it answers from them (a calculator's result, the search hit's sentence
  sharing most words with the question);
- given numbered sources (`[1] ...`, as RAG prompts carry them) it answers with the sentence
  sharing most words with the question and cites it as `[n]`, or says the sources do not answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson

from faas.services.gateway_service.providers.base import (
    ChatRequest,
    ChatResult,
    StreamEvent,
    Usage,
)
from faas.services.gateway_service.providers.mock_replies import last_question, reply
from faas.services.gateway_service.providers.mock_tools import tool_call
from faas.services.gateway_service.providers.mock_words import digest
from faas.services.gateway_service.routing_table import Deployment
from faas.shared.tokens import (
    count_chat_tokens,
    count_tokens,
    truncate_tokens,
)

FINGERPRINT = "faas-mock"
LABEL = "[mock]"
_WORDS_PER_CHUNK = 3
_ARGUMENT_CHUNK = 16


class MockProvider:
    name = "mock"

    def _answer(self, request: ChatRequest, deployment: Deployment) -> dict[str, Any]:
        """The whole response, as a `chat.completion` body."""
        messages = [m for m in request.messages if isinstance(m, dict)]
        params = request.params
        question = last_question(messages)
        key = digest(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS).decode())
        message: dict[str, Any] = {"role": "assistant", "content": None}
        finish_reason = "stop"

        call = tool_call(messages, params, question, key)
        if call is not None:
            message["tool_calls"] = [call]
            finish_reason = "tool_calls"
            completion_tokens = count_tokens(orjson.dumps(call["function"]).decode())
        else:
            answer = reply(messages, question)
            response_format = params.get("response_format")
            if isinstance(response_format, dict) and response_format.get("type") in (
                "json_object",
                "json_schema",
            ):
                body = {"mock": True, "answer": answer, "echo": question[:200]}
                content = orjson.dumps(body).decode()
            else:
                content = f"{LABEL} {answer}"
            limit = params.get("max_completion_tokens") or params.get("max_tokens")
            completion_tokens = count_tokens(content)
            if isinstance(limit, int) and 0 < limit < completion_tokens:
                content = truncate_tokens(content, limit)
                completion_tokens = limit
                finish_reason = "length"
            message["content"] = content

        prompt_tokens = count_chat_tokens(messages, params.get("tools") or None)
        return {
            "id": f"chatcmpl-mock-{key.hex()[:24]}",
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
        for delta in _deltas(message):
            if delay:
                await asyncio.sleep(delay)
            yield StreamEvent(data=chunk(delta), has_content=True)
        finish = choice["finish_reason"]
        yield StreamEvent(data=chunk({}, finish), finish_reason=finish)
        usage_chunk = orjson.dumps({**head, "choices": [], "usage": body["usage"]})
        yield StreamEvent(data=usage_chunk, usage=Usage.from_openai(body["usage"]))

    async def health(self, deployment: Deployment) -> bool:
        return True

    async def aclose(self) -> None:
        return None


def _deltas(message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The message in OpenAI's streamed pieces: a tool call's id and name first, then its
    arguments in fragments; text a few words at a time."""
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call["function"]
        yield {
            "tool_calls": [
                {
                    "index": index,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": function["name"], "arguments": ""},
                }
            ]
        }
        arguments = function["arguments"]
        for i in range(0, len(arguments), _ARGUMENT_CHUNK):
            piece = arguments[i : i + _ARGUMENT_CHUNK]
            yield {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
    if message.get("content") is not None:
        words = str(message["content"]).split(" ")
        for i in range(0, len(words), _WORDS_PER_CHUNK):
            piece = " ".join(words[i : i + _WORDS_PER_CHUNK])
            yield {"content": piece if i == 0 else " " + piece}
