"""The mock upstream's Anthropic Messages endpoint (`POST /v1/messages`), for the gateway's
`anthropic` provider. Deterministic: it answers REPLY, cut at the first stop sequence found in
it (`stop_reason: "stop_sequence"`) or after `max_tokens` words; with `tool_calls` switched on
and tools offered it calls the first tool (input `{"city": "Paris"}`); after a `tool_result`
it answers "The tool said: <result>". Streams use Anthropic's event types."""

from __future__ import annotations

from typing import Any

import orjson

REPLY = "Hello from the mock upstream."
INPUT_TOKENS = 10
TOOL_INPUT = {"city": "Paris"}


def _last_tool_result(request: dict[str, Any]) -> str | None:
    messages = request.get("messages") or []
    last = messages[-1] if messages else {}
    content = last.get("content") if isinstance(last, dict) else None
    for block in content if isinstance(content, list) else []:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            result = block.get("content")
            return result if isinstance(result, str) else orjson.dumps(result).decode()
    return None


def _text_answer(request: dict[str, Any], text: str) -> tuple[str, str, str | None]:
    """(text, stop_reason, stop_sequence)."""
    for sequence in request.get("stop_sequences") or []:
        at = text.find(sequence)
        if at >= 0:
            return text[:at], "stop_sequence", sequence
    words = text.split(" ")
    limit = int(request.get("max_tokens") or 0)
    if 0 < limit < len(words):
        return " ".join(words[:limit]), "max_tokens", None
    return text, "end_turn", None


def message(request: dict[str, Any], tool_calls: bool) -> dict[str, Any]:
    """The whole answer, as an Anthropic message."""
    tools = request.get("tools") or []
    result = _last_tool_result(request)
    content: list[dict[str, Any]]
    sequence = None
    if tool_calls and tools and result is None:
        name = str(tools[0].get("name"))
        content = [{"type": "tool_use", "id": "toolu_mock_1", "name": name, "input": TOOL_INPUT}]
        reason = "tool_use"
        output = 12
    else:
        base = REPLY if result is None else f"The tool said: {result}"
        text, reason, sequence = _text_answer(request, base)
        content = [{"type": "text", "text": text}]
        output = len(text.split())
    return {
        "id": "msg_mockupstream",
        "type": "message",
        "role": "assistant",
        "model": str(request.get("model") or "mock-claude"),
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": {
            "input_tokens": INPUT_TOKENS,
            "output_tokens": output,
            "cache_read_input_tokens": 0,
        },
    }


def _frame(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def stream_frames(answer: dict[str, Any]) -> list[bytes]:
    """The answer as Anthropic's SSE frames (`event:` and `data:` lines)."""
    start = answer | {"content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {"input_tokens": INPUT_TOKENS, "output_tokens": 1}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for index, block in enumerate(answer["content"]):
        if block["type"] == "text":
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                }
            )
            words = block["text"].split(" ")
            for i, word in enumerate(words):
                delta = {"type": "text_delta", "text": (" " if i else "") + word}
                events.append({"type": "content_block_delta", "index": index, "delta": delta})
        else:
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": block | {"input": {}},
                }
            )
            arguments = orjson.dumps(block["input"]).decode()
            for i in range(0, len(arguments), 5):
                delta = {"type": "input_json_delta", "partial_json": arguments[i : i + 5]}
                events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
    delta = {"stop_reason": answer["stop_reason"], "stop_sequence": answer["stop_sequence"]}
    usage = {"output_tokens": answer["usage"]["output_tokens"]}
    events.append({"type": "message_delta", "delta": delta, "usage": usage})
    events.append({"type": "message_stop"})
    return [_frame(e) for e in events]
