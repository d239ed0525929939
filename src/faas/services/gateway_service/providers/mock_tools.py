"""The mock model's tool calls: it honours `tool_choice`, and on "auto" calls the tool the
question calls for (see `mock.py`'s docstring for the rules), with arguments filling the tool's
required parameters."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from faas.services.gateway_service.providers.mock_words import WORD_RE, words

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
_QUESTION_WORDS = frozenset({"how", "what", "when", "where", "which", "who", "why", "whom"})
_SEARCH_WORDS = frozenset({"search", "find", "document", "look"})
_ARITHMETIC_WORDS = frozenset({"calculator", "calculate", "arithmetic", "math", "compute"})


@dataclass(frozen=True, slots=True)
class _Tool:
    name: str
    description: str
    parameters: dict[str, Any]

    @property
    def words(self) -> set[str]:
        return words(self.name.replace("_", " ") + " " + self.description)


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
    asked = words(question)
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
    first = WORD_RE.findall(lowered)[:1]
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


def tool_call(
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
