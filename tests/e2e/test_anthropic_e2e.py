"""`faas up` spoken to by the official `anthropic` SDK over real HTTP (`x-api-key` = a faas
token): messages, streams, a tools round trip with the mock model, count_tokens and errors;
and the OpenAI SDK against a deployment of the `anthropic` provider, whose upstream is the mock
upstream process's Anthropic endpoint."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

from tests.e2e.test_gateway_e2e import Faas, gateway_on
from tests.support.mock_upstream import REPLY, upstream_process

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HI = [{"role": "user", "content": "hi"}]
CALCULATOR = {
    "name": "calculator",
    "description": "Evaluate an arithmetic expression",
    "input_schema": {
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    },
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
        timeout_s: 10
  - name: claude
    deployments:
      - provider: anthropic
        model: mock-claude
        api_base: {upstream_url}/v1
        api_key: sk-ant-up
        timeout_s: 10
  - name: mock
    deployments:
      - provider: mock
        model: faas-mock
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faas]:
    base = tmp_path_factory.mktemp("anthropic")
    with upstream_process() as upstream, gateway_on(base, routing(upstream)) as gateway:
        yield gateway


def client(gateway: Faas, token: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=token, max_retries=0, timeout=60)


def test_anthropic_sdk_messages_stream_tools_and_count_tokens(gateway: Faas) -> None:
    with client(gateway, gateway.token("acme")) as sdk:
        message = sdk.messages.create(model="chat", max_tokens=64, system="Be brief.", messages=HI)
        assert message.content[0].text == REPLY
        assert message.stop_reason == "end_turn" and message.usage.output_tokens == 7

        with sdk.messages.stream(model="chat", max_tokens=64, messages=HI) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text == REPLY and final.usage.input_tokens == 10

        question = {"role": "user", "content": "What is 12 * 12?"}
        first = sdk.messages.create(
            model="mock", max_tokens=256, tools=[CALCULATOR], messages=[question]
        )
        call = first.content[-1]
        assert first.stop_reason == "tool_use" and call.type == "tool_use"
        result = {"type": "tool_result", "tool_use_id": call.id, "content": "144"}
        answer = sdk.messages.create(
            model="mock",
            max_tokens=256,
            tools=[CALCULATOR],
            messages=[
                question,
                {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                {"role": "user", "content": [result]},
            ],
        )
        assert "144" in answer.content[0].text

        counted = sdk.messages.count_tokens(model="chat", messages=HI)
        assert counted.input_tokens > 0


def test_anthropic_sdk_errors(gateway: Faas) -> None:
    with client(gateway, "not-a-token") as stranger, pytest.raises(anthropic.AuthenticationError):
        stranger.messages.create(model="chat", max_tokens=8, messages=HI)
    with client(gateway, gateway.token("acme")) as sdk:
        with pytest.raises(anthropic.NotFoundError):
            sdk.messages.create(model="no-such-model", max_tokens=8, messages=HI)
        with pytest.raises(anthropic.BadRequestError):
            sdk.messages.create(model="chat", max_tokens=-1, messages=HI)


def test_openai_sdk_through_the_anthropic_provider(gateway: Faas) -> None:
    with gateway.client(gateway.token("acme")) as openai_client:
        reply = openai_client.chat.completions.create(model="claude", messages=HI)
        assert reply.choices[0].message.content == REPLY
        assert reply.usage is not None and reply.usage.prompt_tokens == 10
        stream = openai_client.chat.completions.create(model="claude", messages=HI, stream=True)
        parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
        assert "".join(parts) == REPLY
