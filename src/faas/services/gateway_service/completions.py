"""OpenAI's legacy prompt API (`POST /v1/completions`), translated to chat for the providers:
each prompt becomes one user message, each answer's message content a `text_completion`
choice. Streams are translated chunk by chunk. Parameters that have no chat equivalent
(`suffix`, `logprobs`, `best_of` above `n`) are refused rather than ignored."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from faas.services.gateway_service.choices import MAX_CHOICES
from faas.services.gateway_service.models import MAX_OUTPUT_TOKENS, CacheOptions

# Prompts times choices: each is one call through the pipeline.
MAX_FANOUT = 32
# OpenAI's default for this API (chat has none).
DEFAULT_MAX_TOKENS = 16
_OWN_FIELDS = {"prompt", "echo", "suffix", "logprobs", "best_of", "cache", "n", "stream"}


class CompletionBody(BaseModel):
    """What the gateway checks itself; other chat parameters (stop, seed, penalties, user...)
    pass through."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=128)
    prompt: Any = Field(
        description="a string, a list of strings, a list of token ids or a list of such lists"
    )
    max_tokens: int | None = Field(DEFAULT_MAX_TOKENS, gt=0, le=MAX_OUTPUT_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    best_of: int | None = Field(None, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    echo: bool = False
    suffix: None = Field(None, description="not supported: chat models have no insertion mode")
    logprobs: None = Field(None, description="not supported")
    cache: CacheOptions | None = Field(None, description="faas extension: response caching")

    @field_validator("best_of")
    @classmethod
    def _best_of_is_n(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value != info.data.get("n", 1):
            raise ValueError("best_of other than n is not supported")
        return value

    def chat_body(self, prompt: str) -> dict[str, Any]:
        """The chat request one prompt becomes."""
        extra = self.model_dump(exclude_none=True, exclude=_OWN_FIELDS)
        return {**extra, "messages": [{"role": "user", "content": prompt}]}


COMPLETION_EXAMPLE = {"model": "chat-default", "prompt": "Say hello.", "max_tokens": 16}


def text_choice(chat: dict[str, Any], index: int, prefix: str) -> dict[str, Any]:
    choices = chat.get("choices") or [{}]
    first = choices[0]
    message = first.get("message") or {}
    content = message.get("content")
    return {
        "text": prefix + (content if isinstance(content, str) else ""),
        "index": index,
        "logprobs": None,
        "finish_reason": first.get("finish_reason"),
    }


def completion_body(
    chats: list[dict[str, Any]], prompts: list[str], n: int, *, echo: bool
) -> dict[str, Any]:
    """One `text_completion` from the chat answers: `chats[p]` holds prompt p's n choices."""
    choices: list[dict[str, Any]] = []
    totals = dict.fromkeys(("prompt_tokens", "completion_tokens", "total_tokens"), 0)
    for p, chat in enumerate(chats):
        for j, choice in enumerate(chat.get("choices") or []):
            single = {**chat, "choices": [choice]}
            choices.append(text_choice(single, p * n + j, prompts[p] if echo else ""))
        usage = chat.get("usage") or {}
        for name in totals:
            totals[name] += int(usage.get(name) or 0)
    return {
        "id": "cmpl-" + uuid.uuid4().hex,
        "object": "text_completion",
        "created": int(time.time()),
        "model": chats[0].get("model"),
        "choices": choices,
        "usage": totals,
    }


def _frames(raw: bytes, pending: bytearray) -> list[bytes]:
    pending += raw
    frames = []
    while (end := pending.find(b"\n\n")) >= 0:
        frames.append(bytes(pending[:end]))
        del pending[: end + 2]
    return frames


def text_chunk(chunk: dict[str, Any], completion_id: str, prefix: str = "") -> bytes | None:
    """A chat.completion.chunk as a text_completion chunk; None when it carries nothing."""
    head = {
        "id": completion_id,
        "object": "text_completion",
        "created": chunk.get("created") or int(time.time()),
        "model": chunk.get("model"),
    }
    if "error" in chunk and "choices" not in chunk:
        return orjson.dumps(chunk)
    choices = []
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        content = delta.get("content")
        text = content if isinstance(content, str) else ""
        reason = choice.get("finish_reason")
        if text or reason or prefix:
            choices.append({"text": prefix + text, "index": 0, "logprobs": None})
            choices[-1]["finish_reason"] = reason
            prefix = ""
    if choices:
        return orjson.dumps({**head, "choices": choices})
    if chunk.get("usage") is not None:
        return orjson.dumps({**head, "choices": [], "usage": chunk["usage"]})
    return None


async def text_stream(chat_frames: AsyncIterator[bytes], echo: str) -> AsyncIterator[bytes]:
    """The SSE frames of a chat stream as the legacy API's frames (`echo` leads the text)."""
    completion_id = "cmpl-" + uuid.uuid4().hex
    pending = bytearray()
    prefix = echo
    async for raw in chat_frames:
        for frame in _frames(raw, pending):
            if not frame.startswith(b"data:"):
                yield frame + b"\n\n"  # a comment (keep-alive): passed on as it is
                continue
            data = frame.removeprefix(b"data:").strip()
            if data == b"[DONE]":
                yield b"data: [DONE]\n\n"
                continue
            converted = text_chunk(orjson.loads(data), completion_id, prefix)
            if converted is not None:
                prefix = "" if b'"text"' in converted else prefix
                yield b"data: " + converted + b"\n\n"
