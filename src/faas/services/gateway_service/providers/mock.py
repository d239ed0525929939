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
import hashlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
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
LABEL = "[mock]"
PLAIN = "No model was consulted: this is the offline mock model."
NOT_IN_SOURCES = "The sources do not answer this question."
_WORDS_PER_CHUNK = 3
_ARGUMENT_CHUNK = 16
# Enough for any RAG prompt; bounds the work on a huge message.
_READ_CHARS = 100_000

_WORD_RE = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_SOURCE_LINE = re.compile(r"^\[(\d{1,3})\][ \t]*", re.MULTILINE)
_QUESTION = re.compile(r"^Question:[ \t]*", re.MULTILINE)
_NUMBER = r"\d++(?:\.\d++)?+"
_OPERATOR = "\\*\\*|//|[-+*/%^\u00d7\u00f7x]"
_EXPRESSION = re.compile(
    rf"(?<![\w.])[(\s]*+-?{_NUMBER}[)\s]*+(?:(?:{_OPERATOR})[(\s]*+-?{_NUMBER}[)\s]*+)++",
    re.IGNORECASE,
)
# Arithmetic is asked in a short question; the bound keeps the search linear in practice.
_EXPRESSION_CHARS = 2_000
_WORD_OPERATORS = (
    (re.compile(r"\b(?:multiplied by|times)\b", re.I), "*"),
    (re.compile(r"\b(?:divided by|over)\b", re.I), "/"),
    (re.compile(r"\bplus\b", re.I), "+"),
    (re.compile(r"\bminus\b", re.I), "-"),
)
_STOPWORDS = frozenset(
    {
        *("a", "an", "and", "are", "as", "at", "be", "by", "can", "could", "did", "do", "does"),
        *("for", "from", "had", "has", "have", "how", "i", "if", "in", "is", "it", "its", "me"),
        *("my", "of", "on", "or", "our", "please", "should", "so", "that", "the", "their"),
        *("them", "then", "there", "these", "this", "to", "tell", "us", "was", "we", "were"),
        *("what", "when", "where", "which", "who", "why", "will", "with", "would", "you", "your"),
    }
)
_QUESTION_WORDS = frozenset({"how", "what", "when", "where", "which", "who", "why", "whom"})
_SEARCH_WORDS = frozenset({"search", "find", "document", "look"})
_ARITHMETIC_WORDS = frozenset({"calculator", "calculate", "arithmetic", "math", "compute"})


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


def _words(text: str) -> set[str]:
    """Lower-cased content words, a trailing plural "s" dropped ("refunds" meets "refund")."""
    found = _WORD_RE.findall(text[:_READ_CHARS].lower())
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in found if w not in _STOPWORDS}


def _sentences(text: str) -> Iterator[str]:
    for line in text.splitlines():
        for part in _SENTENCE_END.split(line.strip().lstrip("#>*- ").strip()):
            if part:
                yield part


def best_sentence(question: str, texts: list[str]) -> tuple[int, str] | None:
    """(index of the text, its sentence sharing most words with the question), or None when no
    sentence shares any. Ties go to the longer sentence (a heading loses to a statement), then
    to the earlier one."""
    asked = _words(question)
    best: tuple[int, int, int, str] | None = None  # (shared, words, -index, sentence)
    for index, text in enumerate(texts):
        for sentence in _sentences(text[:_READ_CHARS]):
            words = _words(sentence)
            shared = len(asked & words)
            key = (shared, min(len(words), 3), -index, sentence)
            if shared and (best is None or key[:3] > best[:3]):
                best = key
    return None if best is None else (-best[2], best[3])


# -- tool calls -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tool:
    name: str
    description: str
    parameters: dict[str, Any]

    @property
    def words(self) -> set[str]:
        return _words(self.name.replace("_", " ") + " " + self.description)


def _offered(tools: Any) -> list[_Tool]:
    offered = []
    for tool in tools if isinstance(tools, list) else []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        description = function.get("description")
        parameters = function.get("parameters")
        offered.append(
            _Tool(
                function["name"],
                description if isinstance(description, str) else "",
                parameters if isinstance(parameters, dict) else {},
            )
        )
    return [t for t in offered if t.name]


def expression_in(text: str) -> str | None:
    """The arithmetic in a question ("What is 17 * 23?" -> "17 * 23"), or None."""
    text = text[:_EXPRESSION_CHARS]
    for pattern, operator in _WORD_OPERATORS:
        text = pattern.sub(f" {operator} ", text)
    match = _EXPRESSION.search(text)
    if match is None:
        return None
    expression = " ".join(match.group().split())
    expression = expression.replace("\u00d7", "*").replace("\u00f7", "/").replace("^", "**")
    expression = re.sub(r"(?<=[\d)\s])[xX](?=[\s(\d])", "*", expression)
    while expression.count("(") > expression.count(")") and expression.startswith("("):
        expression = expression[1:].lstrip()
    while expression.count(")") > expression.count("(") and expression.endswith(")"):
        expression = expression[:-1].rstrip()
    return expression


def _choose(question: str, tools: list[_Tool]) -> _Tool | None:
    """The tool a question calls for, by the rules in the module docstring."""
    lowered = question.lower()
    named = next((t for t in tools if t.name.lower() in lowered), None)
    if named is not None:
        return named
    asked = _words(question)
    if expression_in(question) is not None:
        calculator = next((t for t in tools if t.words & _ARITHMETIC_WORDS), None)
        if calculator is not None:
            return calculator
    searcher = next((t for t in tools if "search" in t.words), None)
    if searcher is not None and asked & _SEARCH_WORDS:
        return searcher
    closest = max(tools, key=lambda t: len(asked & t.words))  # the first of the closest
    if asked & closest.words:
        return closest
    first = _WORD_RE.findall(lowered)[:1]
    if searcher is not None and (lowered.rstrip().endswith("?") or set(first) & _QUESTION_WORDS):
        return searcher
    return None


def _arguments(tool: _Tool | None, question: str) -> str:
    """Arguments filling the tool's required parameters: the expression for a calculator, the
    question for a string, the default or minimum for a number."""
    if tool is None:
        return "{}"
    properties = tool.parameters.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = tool.parameters.get("required")
    names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
    expression = expression_in(question) if tool.words & _ARITHMETIC_WORDS else None
    arguments: dict[str, Any] = {}
    for name in names:
        schema = properties.get(name)
        schema = schema if isinstance(schema, dict) else {}
        kind = schema.get("type", "string")
        if kind == "string":
            text = expression if expression is not None else question
            limit = schema.get("maxLength")
            arguments[name] = text[:limit] if isinstance(limit, int) and limit > 0 else text
        elif kind in ("integer", "number"):
            arguments[name] = schema.get("default", schema.get("minimum", 1))
        elif kind == "boolean":
            arguments[name] = bool(schema.get("default", False))
    return orjson.dumps(arguments).decode()


def _tool_call(
    messages: list[dict[str, Any]], params: dict[str, Any], question: str, digest: bytes
) -> dict[str, Any] | None:
    """The call `tool_choice` asks for, or the one the question calls for; None to answer."""
    tools = _offered(params.get("tools"))
    choice = params.get("tool_choice", "auto")
    if not tools or choice == "none":
        return None
    chosen: _Tool | None
    name: str | None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        name = name if isinstance(name, str) and name else None
        chosen = next((t for t in tools if t.name == name), None)
    else:
        last = messages[-1] if messages else {}
        calls_for = choice == "required" or last.get("role") == "user"
        chosen = _choose(question, tools) if calls_for else None
        if chosen is None and choice == "required":
            chosen = tools[0]
        name = chosen.name if chosen is not None else None
    if name is None:
        return None
    return {
        "id": f"call_mock_{digest[:6].hex()}",
        "type": "function",
        "function": {"name": name, "arguments": _arguments(chosen, question)},
    }


# -- text answers ---------------------------------------------------------------------------


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
    text = text[:_READ_CHARS]
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


def _reply(messages: list[dict[str, Any]], question: str) -> str:
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


def _last_question(messages: list[dict[str, Any]]) -> str:
    return next((message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")


class MockProvider:
    name = "mock"

    def _answer(self, request: ChatRequest, deployment: Deployment) -> dict[str, Any]:
        """The whole response, as a `chat.completion` body."""
        messages = [m for m in request.messages if isinstance(m, dict)]
        params = request.params
        question = _last_question(messages)
        digest = _digest(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS).decode())
        message: dict[str, Any] = {"role": "assistant", "content": None}
        finish_reason = "stop"

        call = _tool_call(messages, params, question, digest)
        if call is not None:
            message["tool_calls"] = [call]
            finish_reason = "tool_calls"
            completion_tokens = count_tokens(orjson.dumps(call["function"]).decode())
        else:
            reply = _reply(messages, question)
            response_format = params.get("response_format")
            if isinstance(response_format, dict) and response_format.get("type") in (
                "json_object",
                "json_schema",
            ):
                body = {"mock": True, "answer": reply, "echo": question[:200]}
                content = orjson.dumps(body).decode()
            else:
                content = f"{LABEL} {reply}"
            limit = params.get("max_completion_tokens") or params.get("max_tokens")
            completion_tokens = count_tokens(content)
            if isinstance(limit, int) and 0 < limit < completion_tokens:
                content = truncate_tokens(content, limit)
                completion_tokens = limit
                finish_reason = "length"
            message["content"] = content

        prompt_tokens = count_chat_tokens(messages, params.get("tools") or None)
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
