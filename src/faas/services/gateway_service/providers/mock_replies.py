"""The mock model's text answers: from the tool results that end a conversation, from
numbered sources (cited as `[n]`), else a plain reply saying that no model was consulted."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson

from faas.services.gateway_service.providers.mock_words import (
    READ_CHARS,
    best_sentence,
    message_text,
)

PLAIN = "No model was consulted: this is the offline mock model."
NOT_IN_SOURCES = "The sources do not answer this question."

_SOURCE_LINE = re.compile(r"^\[(\d{1,3})\][ \t]*", re.MULTILINE)
_QUESTION = re.compile(r"^Question:[ \t]*", re.MULTILINE)


def _from_tool(name: str, content: str, question: str) -> str:
    try:
        payload = orjson.loads(content)
    except orjson.JSONDecodeError:
        payload = content
    if isinstance(payload, dict) and set(payload) == {"error"}:
        return f"{name} failed: {payload['error']}"
    if isinstance(payload, dict) and "result" in payload:
        expression = payload.get("expression")
        shown = f"{expression} = " if isinstance(expression, str) else ""
        return f"{name}: {shown}{orjson.dumps(payload['result']).decode()}."
    found = best_sentence(question, list(_strings(payload)))
    if found is not None:
        return f"{name}: {found[1]}"
    if payload == []:
        return f"{name} found nothing."
    return f"{name} returned {orjson.dumps(payload).decode()[:200]}"


def _strings(value: Any, depth: int = 0) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif depth < 4 and isinstance(value, list):
        for item in value:
            yield from _strings(item, depth + 1)
    elif depth < 4 and isinstance(value, dict):
        for item in value.values():
            yield from _strings(item, depth + 1)


def _after_tools(messages: list[dict[str, Any]], question: str) -> str | None:
    """An answer from the tool results ending the conversation, or None if it does not end so."""
    results = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.append(message)
    if not results:
        return None
    names: dict[str, str] = {}
    for message in messages:
        calls = message.get("tool_calls") if message.get("role") == "assistant" else None
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                names[str(call.get("id"))] = str(call["function"].get("name") or "the tool")
    parts = [
        _from_tool(names.get(str(m.get("tool_call_id")), "the tool"), message_text(m), question)
        for m in reversed(results)
    ]
    return " ".join(parts)


def _from_sources(text: str, question: str) -> str | None:
    """A cited answer when the text carries numbered sources, or None if it carries none. A
    "Question:" line after the sources (RAG's prompt) is the question asked."""
    text = text[:READ_CHARS]
    starts = list(_SOURCE_LINE.finditer(text))
    if not starts:
        return None
    asked = _QUESTION.search(text, starts[-1].end())
    end = asked.start() if asked else len(text)
    if asked:
        rest = text[asked.end() :]
        question = rest[: rest.find("\nAnswer:")] if "\nAnswer:" in rest else rest
    elif question == text:  # the sources came with the question: it is what precedes them
        question = text[: starts[0].start()]
    bounds = [m.start() for m in starts[1:]] + [end]
    numbers = [int(m.group(1)) for m in starts]
    passages = [text[m.end() : stop] for m, stop in zip(starts, bounds, strict=True)]
    found = best_sentence(question, passages)
    if found is None:
        return NOT_IN_SOURCES
    index, sentence = found
    body = sentence.rstrip(".!? ")
    return f"{body} [{numbers[index]}]{sentence[len(body) :].strip() or '.'}"


def reply(messages: list[dict[str, Any]], question: str) -> str:
    """The answer's text, without the label."""
    from_tools = _after_tools(messages, question)
    if from_tools is not None:
        return from_tools
    instructions = [m for m in messages if m.get("role") in ("system", "developer")]
    for text in (question, *map(message_text, instructions)):
        cited = _from_sources(text, question)
        if cited is not None:
            return cited
    return f"{PLAIN} You said: {question[:200]}"


def last_question(messages: list[dict[str, Any]]) -> str:
    return next((message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
