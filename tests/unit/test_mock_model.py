"""The offline mock chat model: tool calls it honours or chooses by word rules, answers from tool
results and from numbered sources with real citations, all deterministic and labelled."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from faas.services.agent_service.runner import _merge_call
from faas.services.agent_service.tools.base import openai_tool_spec
from faas.services.agent_service.tools.builtin import CalculatorTool, RagSearchTool
from faas.services.gateway_service.providers.base import ChatRequest
from faas.services.gateway_service.providers.mock import MockProvider
from faas.services.gateway_service.providers.mock_tools import expression_in
from faas.services.gateway_service.routing_table import Deployment
from faas.services.rag_service.retrieval import build_prompt

MOCK = Deployment(provider="mock", model="mock-1")
TOUR_TOOLS = [openai_tool_spec(RagSearchTool()), openai_tool_spec(CalculatorTool())]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
REFUNDS = "# Refunds\n\nRefunds are paid within 14 days of the return."
SHIPPING = "Parcels ship in two days. Express shipping arrives the next day."


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "You are a helpdesk."}, {"role": "user", "content": text}]


async def reply(messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
    result = await MockProvider().chat(ChatRequest(messages, params), MOCK)
    choice: dict[str, Any] = result.body["choices"][0]
    return choice


def called(choice: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    assert choice["finish_reason"] == "tool_calls"
    function = choice["message"]["tool_calls"][0]["function"]
    return function["name"], orjson.loads(function["arguments"])


async def test_a_question_about_documents_calls_the_search_tool_with_the_question() -> None:
    choice = await reply(user("How long do refunds take?"), tools=TOUR_TOOLS)
    assert called(choice) == ("rag_search", {"query": "How long do refunds take?"})


@pytest.mark.parametrize(
    ("question", "expression"),
    [
        ("What is 17 * 23?", "17 * 23"),
        ("what's 12 times 3", "12 * 3"),
        ("Compute (2 + 3) ^ 2 please", "(2 + 3) ** 2"),
        ("How much is 7 x 6?", "7 * 6"),
    ],
)
async def test_arithmetic_calls_the_calculator_with_the_expression(
    question: str, expression: str
) -> None:
    choice = await reply(user(question), tools=TOUR_TOOLS)
    assert called(choice) == ("calculator", {"expression": expression})


async def test_a_tool_sharing_words_with_the_question_is_called() -> None:
    choice = await reply(user("Is there rain in the weather for Paris today"), tools=[WEATHER])
    name, arguments = called(choice)
    assert name == "get_weather" and arguments == {
        "city": "Is there rain in the weather for Paris today"
    }
    plain = await reply(user("Hello there"), tools=[WEATHER, *TOUR_TOOLS])
    assert plain["finish_reason"] == "stop" and "tool_calls" not in plain["message"]


async def test_tool_choice_is_honoured() -> None:
    forced = {"type": "function", "function": {"name": "calculator"}}
    assert called(await reply(user("Hello"), tools=TOUR_TOOLS, tool_choice=forced))[0] == (
        "calculator"
    )
    required = await reply(user("Hello"), tools=TOUR_TOOLS, tool_choice="required")
    assert called(required)[0] == "rag_search"  # nothing fits: the first tool
    never = await reply(user("What is 17 * 23?"), tools=TOUR_TOOLS, tool_choice="none")
    assert never["finish_reason"] == "stop" and never["message"]["content"].startswith("[mock] ")
    for odd in (5, {"type": "function"}, ["calculator"], {"function": {"name": 3}}):
        assert (await reply(user("Hello"), tools=TOUR_TOOLS, tool_choice=odd))["finish_reason"]


def after_tool(question: str, name: str, result: Any) -> list[dict[str, Any]]:
    call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": "{}"}}
    return [
        *user(question),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": orjson.dumps(result).decode()},
    ]


async def test_after_tool_results_it_answers_from_them() -> None:
    product = after_tool("What is 17 * 23?", "calculator", {"expression": "17 * 23", "result": 391})
    answer = await reply(product, tools=TOUR_TOOLS)
    assert answer["finish_reason"] == "stop"
    assert answer["message"]["content"] == "[mock] calculator: 17 * 23 = 391."
    hits = [{"title": "shipping", "text": SHIPPING}, {"title": "refunds.md", "text": REFUNDS}]
    found = after_tool("How long do refunds take?", "rag_search", hits)
    text = (await reply(found, tools=TOUR_TOOLS))["message"]["content"]
    assert text == "[mock] rag_search: Refunds are paid within 14 days of the return."
    failed = after_tool("What is 1/0?", "calculator", {"error": "division by zero"})
    assert "division by zero" in (await reply(failed, tools=TOUR_TOOLS))["message"]["content"]
    nothing = after_tool("How long do refunds take?", "rag_search", [])
    assert (await reply(nothing))["message"]["content"] == "[mock] rag_search found nothing."


async def test_numbered_sources_get_an_answer_citing_the_passage_it_came_from() -> None:
    prompt = build_prompt(
        "How long do refunds take?", [(1, "shipping", SHIPPING), (2, "refunds.md", REFUNDS)]
    )
    first = await reply([{"role": "user", "content": prompt}])
    second = await reply([{"role": "user", "content": prompt}])
    assert first["message"]["content"] == second["message"]["content"]
    assert (
        first["message"]["content"] == "[mock] Refunds are paid within 14 days of the return [2]."
    )
    # sources in the system message, the question from the user
    system = "Use these sources.\n\n[1] refunds.md\n" + REFUNDS
    split = [{"role": "system", "content": system}, {"role": "user", "content": "refund timing?"}]
    assert (await reply(split))["message"]["content"].endswith("of the return [1].")


async def test_sources_that_do_not_answer_are_not_cited() -> None:
    prompt = build_prompt("What is the capital of France?", [(1, "refunds.md", REFUNDS)])
    content = (await reply([{"role": "user", "content": prompt}]))["message"]["content"]
    assert content == "[mock] The sources do not answer this question."


async def test_a_plain_answer_has_the_same_wording_whatever_the_question() -> None:
    one = (await reply(user("Hello!")))["message"]["content"]
    two = (await reply(user("Bonjour")))["message"]["content"]
    assert one.startswith("[mock] ") and one.removesuffix("Hello!") == two.removesuffix("Bonjour")


async def test_a_streamed_tool_call_arrives_in_openai_delta_pieces() -> None:
    request = ChatRequest(user("What is 17 * 23?"), {"tools": TOUR_TOOLS})
    whole = (await MockProvider().chat(request, MOCK)).body["choices"][0]["message"]
    events = [e async for e in MockProvider().stream(request, MOCK)]
    deltas = [orjson.loads(e.data)["choices"] for e in events]
    parts = [d[0]["delta"]["tool_calls"][0] for d in deltas if d and "tool_calls" in d[0]["delta"]]
    assert len(parts) >= 2 and parts[0]["id"] and parts[0]["function"]["arguments"] == ""
    assert all("id" not in p and "name" not in p["function"] for p in parts[1:])
    merged: dict[int, dict[str, Any]] = {}
    for part in parts:
        _merge_call(merged, part)
    assert [merged[0]] == whole["tool_calls"]
    assert events[-2].finish_reason == "tool_calls"


def test_expression_in_finds_only_arithmetic() -> None:
    assert expression_in("How long do refunds take?") is None
    assert expression_in("Pay 14 days after") is None
    assert expression_in("sum 2 + 2") == "2 + 2"


@pytest.mark.parametrize(
    "params",
    [
        {"tools": [{"function": {"name": "x", "parameters": {"required": [1, "a"]}}}]},
        {"tools": [{"function": {"name": "calc", "description": "math", "parameters": []}}]},
        {"tools": [{"type": "function"}, "calculator", 3], "tool_choice": "required"},
        {"tools": TOUR_TOOLS, "tool_choice": {"function": {"name": "nope"}}},
        {"response_format": "json_object"},
        {"response_format": {"type": "json_object"}, "tools": TOUR_TOOLS, "tool_choice": "none"},
    ],
)
async def test_odd_shapes_get_an_answer_not_an_error(params: dict[str, Any]) -> None:
    odd: list[Any] = [
        {"role": "assistant", "tool_calls": [{"id": ["x"], "function": {"name": 1}}, "x"]},
        {"role": ["user"], "content": [{"text": "1+1"}, 5]},
        {"role": "tool", "tool_call_id": {"a": 1}, "content": "[1] not json"},
        {"role": "user", "content": "[1] a source\n\nQuestion: 2 * 3 ?"},
    ]
    request = ChatRequest(odd, params)
    choice = (await MockProvider().chat(request, MOCK)).body["choices"][0]
    assert choice["finish_reason"] in ("stop", "tool_calls")
    assert [e async for e in MockProvider().stream(request, MOCK)][-2].finish_reason
