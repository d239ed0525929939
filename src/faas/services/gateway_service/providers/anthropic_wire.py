"""OpenAI chat -> Anthropic Messages and back, for the `anthropic` provider: an Anthropic
upstream behind the gateway's OpenAI-shaped pipeline.

Requests: system and developer messages join into `system`; user content parts become text
and image blocks (a data URL a base64 source, else a URL source); an assistant's `tool_calls`
become `tool_use` blocks; `tool` messages become `tool_result` blocks of a user turn; turns of
the same role merge (Anthropic requires them to alternate). `stop` becomes `stop_sequences`,
`user` `metadata.user_id`, `tool_choice` its Anthropic form; `max_tokens` is required upstream,
so it defaults to the deployment's `max_output_tokens`, else 4096. Sampling knobs Anthropic
lacks (penalties, seed, logit_bias, response_format) are not sent; `n > 1` is refused.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from faas.services.gateway_service.providers.base import ProviderError, Usage
from faas.services.gateway_service.routing_table import Deployment

DEFAULT_MAX_TOKENS = 4096
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_DATA_URL = re.compile(r"^data:(?P<media>[\w.+/-]+);base64,(?P<data>.*)$", re.DOTALL)
# OpenAI tool_choice strings as Anthropic's.
_TOOL_CHOICE = {"auto": "auto", "required": "any", "none": "none"}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n\n".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("text")
        )
    return ""


def _image(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = str(image.get("url", "") if isinstance(image, dict) else image or "")
    match = _DATA_URL.match(url)
    if match is not None:
        source = {"type": "base64", "media_type": match["media"], "data": match["data"]}
    else:
        source = {"type": "url", "url": url}
    return {"type": "image", "source": source}


def _blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "image_url":
            blocks.append(_image(part))
        elif part.get("text"):
            blocks.append({"type": "text", "text": str(part["text"])})
    return blocks


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        parsed = orjson.loads(raw or "{}")
    except (orjson.JSONDecodeError, TypeError):
        parsed = None
    if not isinstance(parsed, dict):
        raise ProviderError("bad_request", "tool call arguments must be a JSON object")
    return parsed


def _turn(message: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    role = message.get("role")
    if role == "tool":
        result = {
            "type": "tool_result",
            "tool_use_id": str(message.get("tool_call_id") or ""),
            "content": _text(message.get("content")),
        }
        return "user", [result]
    blocks = _blocks(message.get("content"))
    if role == "assistant":
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            blocks.append(
                {
                    "type": "tool_use",
                    "id": str(call.get("id") or ""),
                    "name": str(function.get("name") or ""),
                    "input": _arguments(function.get("arguments")),
                }
            )
        return "assistant", blocks
    return "user", blocks


def _messages(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") in ("system", "developer"):
            system.append(_text(message.get("content")))
            continue
        role, blocks = _turn(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return "\n\n".join(s for s in system if s), turns


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        out: dict[str, Any] = {"type": "tool", "name": str(name or "")}
    elif isinstance(choice, str) and choice in _TOOL_CHOICE:
        out = {"type": _TOOL_CHOICE[choice]}
    elif parallel is False:
        out = {"type": "auto"}
    else:
        return None
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict):
            continue
        definition: dict[str, Any] = {
            "name": str(function.get("name") or ""),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            definition["description"] = str(function["description"])
        out.append(definition)
    return out


def anthropic_request(
    messages: list[dict[str, Any]], params: dict[str, Any], deployment: Deployment
) -> dict[str, Any]:
    """The Anthropic Messages body for an OpenAI chat request (`stream` is set by the caller)."""
    if int(params.get("n") or 1) != 1:
        raise ProviderError("bad_request", "the anthropic provider answers one choice (n=1)")
    system, turns = _messages(messages)
    limit = params.get("max_completion_tokens") or params.get("max_tokens")
    body: dict[str, Any] = {
        "model": deployment.model,
        "messages": turns,
        "max_tokens": int(limit or deployment.max_output_tokens or DEFAULT_MAX_TOKENS),
    }
    if system:
        body["system"] = system
    for name in ("temperature", "top_p", "top_k"):
        if params.get(name) is not None:
            body[name] = params[name]
    stop = params.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if params.get("user"):
        body["metadata"] = {"user_id": str(params["user"])}
    if params.get("tools"):
        body["tools"] = _tools(params["tools"])
        choice = _tool_choice(params.get("tool_choice"), params.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
    return body


def openai_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Anthropic usage as OpenAI's: prompt tokens include cache reads and writes."""
    usage = usage or {}
    cached = int(usage.get("cache_read_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cached
    prompt += int(usage.get("cache_creation_input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def openai_completion(message: dict[str, Any], created: int) -> tuple[dict[str, Any], Usage]:
    """The OpenAI `chat.completion` of an Anthropic message."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            function = {"name": str(block.get("name") or ""), "arguments": arguments}
            call_id = str(block.get("id") or "")
            calls.append({"id": call_id, "type": "function", "function": function})
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        reply["tool_calls"] = calls
    choice: dict[str, Any] = {
        "index": 0,
        "message": reply,
        "logprobs": None,
        "finish_reason": FINISH_REASONS.get(str(message.get("stop_reason")), "stop"),
    }
    if message.get("stop_sequence"):
        choice["stop_reason"] = message["stop_sequence"]  # which one, as vLLM reports it
    usage = openai_usage(message.get("usage"))
    body = {
        "id": f"chatcmpl-{message.get('id') or ''}",
        "object": "chat.completion",
        "created": created,
        "model": str(message.get("model") or ""),
        "choices": [choice],
        "usage": usage,
    }
    return body, Usage.from_openai(usage) or Usage()
