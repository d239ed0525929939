"""The Responses API on a real `faas up`, with the mock upstream as its own process: the official
`openai` client (text, tools, `previous_response_id`, streaming, stored responses) and the
OpenAI Agents SDK running an agent with one function tool, over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import openai
import pytest

from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from tests.e2e.test_gateway_e2e import REPLY, Faas, control, gateway_on
from tests.support.mock_upstream import upstream_process

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CALL = {
    "tool_calls": [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"q": "faas"}'},
        }
    ]
}
LOOKUP = {
    "type": "function",
    "name": "lookup",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
}


def routing(upstream_url: str) -> str:
    return f"""\
models:
  - name: chat
    deployments:
      - provider: openai
        model: mock-model
        api_base: {upstream_url}/v1
        api_key: sk-up
  - name: local
    deployments:
      - provider: mock
        model: faas-mock
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with upstream_process() as url:
        yield url


@pytest.fixture(scope="module")
def gateway(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faas]:
    with gateway_on(tmp_path_factory.mktemp("responses"), routing(upstream)) as gateway:
        yield gateway


def test_openai_client_responses_end_to_end(gateway: Faas, upstream: str) -> None:
    with gateway.client(gateway.token("acme")) as client:
        first = client.responses.create(model="chat", input="hi")
        assert first.output_text == REPLY and first.usage is not None

        control(upstream, script=[CALL, {"content": "faas is a platform."}])
        called = client.responses.create(
            model="chat", input="Look up faas.", tools=[LOOKUP], previous_response_id=first.id
        )
        call = called.output[0]
        assert call.type == "function_call" and call.name == "lookup"
        answered = client.responses.create(
            model="chat",
            tools=[LOOKUP],
            previous_response_id=called.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "found"}],
        )
        assert answered.output_text == "faas is a platform."

        with client.responses.stream(
            model="chat", input="again", previous_response_id=answered.id
        ) as stream:
            deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
            final = stream.get_final_response()
        assert "".join(deltas) == REPLY == final.output_text

        items = client.responses.input_items.list(answered.id)
        assert [i.type for i in items.data] == ["function_call_output"]
        assert client.responses.retrieve(final.id).previous_response_id == answered.id
        client.responses.delete(final.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(final.id)

        with gateway.client(gateway.token("globex")) as other, pytest.raises(openai.NotFoundError):
            other.responses.retrieve(answered.id)


@function_tool
def add(expression: str) -> str:
    """Calculate the sum in an arithmetic expression like "2 + 3"."""
    left, _, right = expression.split()
    return json.dumps({"expression": expression, "result": int(left) + int(right)})


def test_agents_sdk_runs_an_agent_with_a_function_tool(gateway: Faas) -> None:
    set_tracing_disabled(True)  # no exporter to reach offline

    async def run() -> str:
        client = openai.AsyncOpenAI(
            base_url=f"{gateway.url}/v1", api_key=gateway.token("acme"), max_retries=0
        )
        async with client:
            agent = Agent(
                name="adder",
                instructions="Use the calculator.",
                tools=[add],
                model=OpenAIResponsesModel(model="local", openai_client=client),
            )
            result = await Runner.run(agent, "What is 40 + 2?", auto_previous_response_id=True)
            return str(result.final_output)

    assert asyncio.run(run()) == "[mock] add: 40 + 2 = 42."
