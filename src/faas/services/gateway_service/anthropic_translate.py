"""Anthropic Messages <-> OpenAI chat, for `/v1/messages` in front of any provider.

Requests: the system prompt becomes a system message; text blocks join into a string (images
make the content a list of OpenAI parts, `image_url` with the URL or a data URL); an
assistant's `tool_use` blocks become its `tool_calls`; a user's `tool_result` blocks become
`tool` messages placed before the rest of that user turn, as OpenAI requires them right after
the assistant's calls. Responses: text and `tool_calls` become `text` and `tool_use` blocks,
`finish_reason` a `stop_reason`, usage Anthropic's (input tokens exclude cache reads).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from faas.services.gateway_service.anthropic_models import (
    CountTokensBody,
    ImageBlock,
    InputMessage,
    MessagesBody,
    TextBlock,
    ToolChoice,
    ToolResultBlock,
    ToolUseBlock,
)
from faas.services.gateway_service.providers.base import Usage
from faas.shared.exceptions import BadRequest, UpstreamError

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def _system_text(system: str | list[TextBlock] | None) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    return "\n\n".join(block.text for block in system if block.text)


def _image_part(block: ImageBlock) -> dict[str, Any]:
    source = block.source
    url = source.url if source.type == "url" else f"data:{source.media_type};base64,{source.data}"
    return {"type": "image_url", "image_url": {"url": url}}


def _content(blocks: list[TextBlock | ImageBlock]) -> str | list[dict[str, Any]]:
    """A string when the blocks are all text (every provider takes it), else OpenAI parts."""
    if all(isinstance(b, TextBlock) for b in blocks):
        return "\n\n".join(b.text for b in blocks if isinstance(b, TextBlock))
    return [
        {"type": "text", "text": b.text} if isinstance(b, TextBlock) else _image_part(b)
        for b in blocks
    ]


def _tool_result(block: ToolResultBlock) -> dict[str, Any]:
    content = block.content
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        text = "\n\n".join(part.text for part in content if isinstance(part, TextBlock))
    if block.is_error:
        # OpenAI's tool message has no error flag: the model reads it from the text.
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": text}


def _assistant(blocks: list[Any]) -> dict[str, Any]:
    texts = [b.text for b in blocks if isinstance(b, TextBlock) and b.text]
    calls = [
        {
            "id": b.id,
            "type": "function",
            "function": {"name": b.name, "arguments": orjson.dumps(b.input).decode()},
        }
        for b in blocks
        if isinstance(b, ToolUseBlock)
    ]
    if any(isinstance(b, ImageBlock | ToolResultBlock) for b in blocks):
        raise BadRequest(
            "messages: an assistant turn holds only text and tool_use blocks",
            details={"param": "messages"},
        )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _user(blocks: list[Any]) -> list[dict[str, Any]]:
    if any(isinstance(b, ToolUseBlock) for b in blocks):
        raise BadRequest(
            "messages: tool_use blocks belong in assistant turns", details={"param": "messages"}
        )
    results = [_tool_result(b) for b in blocks if isinstance(b, ToolResultBlock)]
    rest = [b for b in blocks if isinstance(b, TextBlock | ImageBlock)]
    if rest:
        results.append({"role": "user", "content": _content(rest)})
    return results


def openai_messages(body: CountTokensBody) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    system = _system_text(body.system)
    if system:
        messages.append({"role": "system", "content": system})
    for message in body.messages:
        messages.extend(_turn(message))
    return messages


def _turn(message: InputMessage) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    if message.role == "assistant":
        return [_assistant(message.content)]
    return _user(message.content)


def openai_tools(body: CountTokensBody) -> list[dict[str, Any]] | None:
    if not body.tools:
        return None
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                **({"description": tool.description} if tool.description else {}),
                "parameters": tool.input_schema,
            },
        }
        for tool in body.tools
    ]


def _tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if choice.type == "tool":
        return {"type": "function", "function": {"name": choice.name}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def to_openai(body: MessagesBody) -> dict[str, Any]:
    """The OpenAI chat body of a `/v1/messages` request (`stream` is the route's to set)."""
    out: dict[str, Any] = {
        "model": body.model,
        "messages": openai_messages(body),
        "max_tokens": body.max_tokens,
    }
    for field in ("temperature", "top_p"):
        value = getattr(body, field)
        if value is not None:
            out[field] = value
    if body.stop_sequences:
        out["stop"] = body.stop_sequences
    if body.metadata is not None and body.metadata.user_id:
        out["user"] = body.metadata.user_id
    tools = openai_tools(body)
    choice = body.tool_choice
    if tools:
        out["tools"] = tools
        if choice is not None:
            out["tool_choice"] = _tool_choice(choice)
            if choice.disable_parallel_tool_use is not None and choice.type != "none":
                out["parallel_tool_calls"] = not choice.disable_parallel_tool_use
    elif choice is not None and choice.type in ("any", "tool"):
        raise BadRequest(
            f'tool_choice "{choice.type}" needs tools', details={"param": "tool_choice"}
        )
    return out


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as the `input` object of a `tool_use` block."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise UpstreamError("the model returned tool arguments that are not JSON") from exc
    if not isinstance(parsed, dict):
        raise UpstreamError("the model returned tool arguments that are not a JSON object")
    return parsed


def stop_reason(
    finish_reason: str | None, matched: Any, stop_sequences: list[str] | None
) -> tuple[str | None, str | None]:
    """`(stop_reason, stop_sequence)`. OpenAI does not say which stop sequence ended the
    text; vLLM and the `anthropic` provider do, as the choice's `stop_reason`."""
    if finish_reason == "stop" and isinstance(matched, str) and matched in (stop_sequences or ()):
        return "stop_sequence", matched
    if finish_reason is None:
        return None, None
    return STOP_REASONS.get(finish_reason, "end_turn"), None


def anthropic_usage(usage: Usage | None) -> dict[str, int]:
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0}
    return {
        "input_tokens": max(0, usage.prompt_tokens - usage.cached_tokens),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def to_anthropic(
    completion: dict[str, Any], usage: Usage | None, *, model: str, body: MessagesBody
) -> dict[str, Any]:
    """The Anthropic message for an OpenAI `chat.completion` (usage as the gateway counted)."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}"),
                "name": str(function.get("name") or ""),
                "input": tool_input(function.get("arguments")),
            }
        )
    reason, sequence = stop_reason(
        choice.get("finish_reason") or "stop", choice.get("stop_reason"), body.stop_sequences
    )
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": anthropic_usage(usage or Usage.from_openai(completion.get("usage"))),
    }
