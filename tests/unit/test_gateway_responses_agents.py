"""The OpenAI Agents SDK (`openai-agents`, whose default model speaks the Responses API) running
an agent with one function tool against the gateway's Responses API and its offline mock model,
which calls a calculator tool for arithmetic and then answers from the tool's result."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import openai
import pytest
from agents.items import ToolCallItem, ToolCallOutputItem

from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from faas.shared.config import Settings
from tests.conftest import token_for
from tests.gateway_app import GatewayEnv, gateway_env, routing


@function_tool
def calculate(expression: str) -> str:
    """Calculate an arithmetic expression with two numbers and one operator."""
    left, operator, right = expression.split()
    result = int(left) * int(right) if operator == "*" else int(left) + int(right)
    return json.dumps({"expression": expression, "result": result})


@pytest.fixture
async def env(make_settings: Callable[..., Settings]) -> AsyncIterator[GatewayEnv]:
    table = routing({"name": "local", "deployments": [{"provider": "mock", "model": "faas-mock"}]})
    async with gateway_env(make_settings(), table) as gateway:
        yield gateway


@pytest.fixture
def sent() -> list[dict[str, Any]]:
    """The bodies the agent sent to /v1/responses."""
    return []


@pytest.fixture
async def agent(env: GatewayEnv, sent: list[dict[str, Any]]) -> AsyncIterator[Agent]:
    set_tracing_disabled(True)  # no exporter to reach offline

    async def record(request: httpx.Request) -> None:
        sent.append(json.loads(request.content))

    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=env.app), event_hooks={"request": [record]}
    )
    client = openai.AsyncOpenAI(
        base_url="http://gw.test/v1", api_key=token_for("acme"), http_client=http
    )
    async with client:
        yield Agent(
            name="calculator",
            instructions="Use the calculator for arithmetic.",
            tools=[calculate],
            model=OpenAIResponsesModel(model="local", openai_client=client),
        )


@pytest.mark.parametrize("chained", [False, True], ids=["full-history", "previous-response-id"])
async def test_an_agent_calls_its_tool_and_answers_from_the_result(
    agent: Agent, env: GatewayEnv, sent: list[dict[str, Any]], chained: bool
) -> None:
    result = await Runner.run(agent, "What is 17 * 23?", auto_previous_response_id=chained)
    assert result.final_output == "[mock] calculate: 17 * 23 = 391."
    calls = [i for i in result.new_items if isinstance(i, ToolCallItem)]
    outputs = [i for i in result.new_items if isinstance(i, ToolCallOutputItem)]
    assert len(calls) == 1 and len(outputs) == 1
    assert json.loads(calls[0].raw_item.arguments) == {"expression": "17 * 23"}  # type: ignore[union-attr]
    usage = result.context_wrapper.usage
    assert usage.requests == 2 and usage.total_tokens > 0
    follow_up = sent[-1]
    if chained:  # only the tool's output goes back; the gateway holds the rest
        assert follow_up["previous_response_id"] == result.raw_responses[0].response_id
        assert [i["type"] for i in follow_up["input"]] == ["function_call_output"]
    else:
        assert "previous_response_id" not in follow_up
        assert len(follow_up["input"]) == 3
    for _ in range(200):
        if len(env.events) >= 2:
            break
        await asyncio.sleep(0.01)
    assert [e["data"]["operation"] for e in env.events] == ["responses", "responses"]


async def test_a_streamed_agent_run(agent: Agent) -> None:
    run = Runner.run_streamed(agent, "What is 6 * 7?")
    kinds = {event.type async for event in run.stream_events()}
    assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
    assert run.final_output == "[mock] calculate: 6 * 7 = 42."
