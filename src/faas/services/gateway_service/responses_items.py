"""Responses API items, the unit of a Responses conversation: what a caller sends as `input`
normalised to the items OpenAI stores and lists (each with an id, message content always a list
of parts), the output items made from a chat completion's message, and the chat messages a
conversation of items becomes for the providers."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from faas.shared.exceptions import ValidationFailed

Item = dict[str, Any]
_ROLES = ("user", "system", "developer", "assistant")
_DETAILS = ("auto", "low", "high")
_SUPPORTED = "message, function_call, function_call_output"
MAX_ID_CHARS = 128


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def _refuse(param: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{param}: {message}", details={"param": param})


def _text(raw: dict[str, Any], key: str, param: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise _refuse(f"{param}.{key}", "must be a string")
    return value


def _item_id(raw: dict[str, Any], param: str, prefix: str) -> str:
    given = raw.get("id")
    if given is None:
        return new_id(prefix)
    if not isinstance(given, str) or not 0 < len(given) <= MAX_ID_CHARS:
        raise _refuse(f"{param}.id", f"must be a string of 1 to {MAX_ID_CHARS} characters")
    return given


def input_items(value: str | list[Any]) -> list[Item]:
    """The request's `input` as stored items; a string is one user message."""
    if isinstance(value, str):
        return [message_item("user", [{"type": "input_text", "text": value}])]
    return [_input_item(raw, f"input.{index}") for index, raw in enumerate(value)]


def message_item(role: str, parts: list[dict[str, Any]], item_id: str | None = None) -> Item:
    return {
        "id": item_id or new_id("msg"),
        "type": "message",
        "role": role,
        "content": parts,
        "status": "completed",
    }


def _input_item(raw: Any, param: str) -> Item:
    if not isinstance(raw, dict):
        raise _refuse(param, "an input item is an object")
    kind = raw.get("type", "message")
    if kind == "message":
        return _message(raw, param)
    if kind == "function_call":
        return {
            "id": _item_id(raw, param, "fc"),
            "type": "function_call",
            "call_id": _text(raw, "call_id", param),
            "name": _text(raw, "name", param),
            "arguments": _text(raw, "arguments", param),
            "status": "completed",
        }
    if kind == "function_call_output":
        return {
            "id": _item_id(raw, param, "fco"),
            "type": "function_call_output",
            "call_id": _text(raw, "call_id", param),
            "output": _tool_output(raw.get("output"), f"{param}.output"),
            "status": "completed",
        }
    shown = kind if isinstance(kind, str) else type(kind).__name__
    raise _refuse(f"{param}.type", f"items of type {shown!r} are not supported ({_SUPPORTED})")


def _message(raw: dict[str, Any], param: str) -> Item:
    role = raw.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise _refuse(f"{param}.role", f"must be one of {', '.join(_ROLES)}")
    content = raw.get("content")
    if isinstance(content, str):
        kind = "output_text" if role == "assistant" else "input_text"
        parts = [_part(role, {"type": kind, "text": content}, f"{param}.content")]
    elif isinstance(content, list):
        parts = [_part(role, p, f"{param}.content.{i}") for i, p in enumerate(content)]
    else:
        raise _refuse(f"{param}.content", "must be a string or a list of content parts")
    return message_item(role, parts, _item_id(raw, param, "msg"))


def _part(role: str, raw: Any, param: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _refuse(param, "a content part is an object")
    kind = raw.get("type")
    if kind in ("input_text", "output_text"):
        text = _text(raw, "text", param)
        if role == "assistant":
            return {"type": "output_text", "text": text, "annotations": []}
        return {"type": "input_text", "text": text}
    if kind == "refusal" and role == "assistant":
        return {"type": "refusal", "refusal": _text(raw, "refusal", param)}
    if kind == "input_image" and role != "assistant":
        detail = raw.get("detail", "auto")
        if detail not in _DETAILS:
            raise _refuse(f"{param}.detail", f"must be one of {', '.join(_DETAILS)}")
        if raw.get("file_id") is not None:
            raise _refuse(f"{param}.file_id", "files are not offered: send image_url")
        return {
            "type": "input_image",
            "image_url": _text(raw, "image_url", param),
            "detail": detail,
        }
    allowed = "output_text, refusal" if role == "assistant" else "input_text, input_image"
    raise _refuse(f"{param}.type", f"{role} content parts are {allowed}")


def _tool_output(value: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for index, raw in enumerate(value):
            where = f"{param}.{index}"
            if not isinstance(raw, dict) or raw.get("type") != "input_text":
                raise _refuse(f"{where}.type", "tool output parts are input_text")
            parts.append({"type": "input_text", "text": _text(raw, "text", where)})
        return parts
    raise _refuse(param, "must be a string or a list of input_text parts")


# -- output ------------------------------------------------------------------------------------


def output_items(message: dict[str, Any], *, status: str, response_id: str) -> list[Item]:
    """A chat completion's message as output items: its text (or refusal) as one assistant
    message, then one function_call item per tool call. Their ids derive from the response's,
    so a replayed answer (Idempotency-Key) has the same ids."""
    parts: list[dict[str, Any]] = []
    content, refusal = message.get("content"), message.get("refusal")
    if isinstance(content, str) and content:
        parts.append(output_text(content))
    if isinstance(refusal, str) and refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    items = []
    if parts or not calls:
        item = message_item("assistant", parts or [output_text("")], derived_id("msg", response_id))
        items.append(item | {"status": status})
    for index, call in enumerate(calls):
        given_function, given_id = call.get("function"), call.get("id")
        function = given_function if isinstance(given_function, dict) else {}
        call_id = given_id if isinstance(given_id, str) else new_id("call")
        item_id = derived_id("fc", f"{response_id}:{index}")
        items.append(function_call_item(call_id, function, item_id=item_id))
    return items


def derived_id(prefix: str, seed: str) -> str:
    return f"{prefix}_{hashlib.sha256(seed.encode()).hexdigest()[:48]}"


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(
    call_id: str, function: dict[str, Any], status: str = "completed", *, item_id: str | None = None
) -> Item:
    return {
        "id": item_id or new_id("fc"),
        "type": "function_call",
        "call_id": call_id,
        "name": str(function.get("name") or ""),
        "arguments": str(function.get("arguments") or ""),
        "status": status,
    }


# -- to chat ------------------------------------------------------------------------------------


def chat_messages(items: list[Item]) -> list[dict[str, Any]]:
    """A conversation of items as chat messages. Consecutive function calls (and the assistant
    text before them) make one assistant message, as a chat model produced them."""
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item["type"]
        if kind == "message":
            messages.append(_chat_message(item))
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            output = item["output"]
            text = output if isinstance(output, str) else "".join(p["text"] for p in output)
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
    return messages


def _chat_message(item: Item) -> dict[str, Any]:
    parts = item["content"]
    if item["role"] == "assistant":
        text = "".join(p.get("text") or p.get("refusal") or "" for p in parts)
        return {"role": "assistant", "content": text}
    # Not every upstream knows "developer"; for a chat model it is the system prompt.
    role = "system" if item["role"] == "developer" else item["role"]
    if len(parts) == 1 and parts[0]["type"] == "input_text":
        return {"role": role, "content": parts[0]["text"]}
    content = [
        {"type": "text", "text": p["text"]}
        if p["type"] == "input_text"
        else {"type": "image_url", "image_url": {"url": p["image_url"], "detail": p["detail"]}}
        for p in parts
    ]
    return {"role": role, "content": content}
