"""GenAI spans of a tour-like flow — an agent run that searches RAG with a tool and answers
through the gateway — exported over real OTLP/HTTP to an in-test receiver: names, attributes,
parent/child links through the service clients, and content capture on and off."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from faas.app import create_service_app
from faas.integrations.bus import Message
from faas.integrations.genai import CONTENT_LIMIT, add_content_event
from faas.integrations.otel import setup_telemetry
from faas.runtime import Runtime
from faas.services import BUILDERS
from faas.services.gateway_service.tracing import call_tracing
from faas.shared.config import Settings
from tests.conftest import auth
from tests.support.mock_upstream import MockUpstream
from tests.support.otlp_receiver import Received, ReceivedSpan, otlp_receiver

A = auth("acme", "ada")
TASK = "How long do refunds take? Mail me at ada@example.com"
ANSWER = "Refunds take 14 days; call +1 415 555 2671 if not."
CLIENT = trace_pb2.Span.SpanKind.SPAN_KIND_CLIENT
ERROR = trace_pb2.Status.StatusCode.STATUS_CODE_ERROR


@pytest.fixture
def receiver() -> Iterator[Received]:
    with otlp_receiver() as received:
        yield received


@asynccontextmanager
async def traced_platform(
    settings: Settings, endpoint: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    telemetry = setup_telemetry(
        "faas-test", span_exporter=OTLPSpanExporter(endpoint=endpoint), set_global=False
    )
    runtime = Runtime.build(settings, telemetry=telemetry)
    names = ["gateway", "cache", "rag", "prompt", "agent"]
    app = create_service_app([BUILDERS[name](runtime) for name in names], runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://faas.test") as client:
            yield client, runtime


def routing(tmp_path: Path, up: MockUpstream) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(
        "models:\n"
        "  - name: chat-default\n    deployments:\n"
        "      - provider: openai\n        model: mock-broken\n"
        "        api_base: http://127.0.0.1:9/v1\n"
        f"      - provider: openai\n        model: mock-model\n"
        f"        api_base: {up.url}\n"
        "        price: {input_per_1k: 0.5, output_per_1k: 1.5}\n"
        "  - name: embed-default\n    kind: embedding\n    deployments:\n      - provider: hash\n"
    )
    return path


def call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    arguments_json = orjson.dumps(arguments).decode()
    return {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments_json}}


async def run_tour(
    tmp_path: Path, make_settings: Callable[..., Settings], received: Received, *, content: bool
) -> dict[str, Any]:
    async with MockUpstream() as up:
        settings = make_settings(gateway_models=routing(tmp_path, up), trace_content=content)
        async with traced_platform(settings, received.url) as (client, _):
            document = {"title": "Refunds", "content": "Refunds are paid within 14 days."}
            created = await client.post("/api/v1/rag/documents", json=document, headers=A)
            assert created.status_code in (200, 201, 202), created.text
            agent = {"name": "helper", "tools": ["rag_search"], "temperature": 0.2}
            response = await client.post("/api/v1/agents", json=agent, headers=A)
            assert response.status_code == 201, response.text
            agent_id = response.json()["data"]["id"]
            tool_call = call("rag_search", {"query": "refund days"})
            up.control(
                script=[
                    {"role": "assistant", "content": None, "tool_calls": [tool_call]},
                    {"role": "assistant", "content": ANSWER},
                ]
            )
            received.spans.clear()
            run = await client.post(
                f"/api/v1/agents/{agent_id}/execute", json={"task": TASK}, headers=A
            )
            assert run.status_code == 200, run.text
            assert run.json()["data"]["output"] == ANSWER
            return {**run.json()["data"], "upstream": up.url}


def ancestors(span: ReceivedSpan, spans: dict[str, ReceivedSpan]) -> list[str]:
    names = []
    while span.parent_id is not None and span.parent_id in spans:
        span = spans[span.parent_id]
        names.append(span.name)
    return names


def only(received: Received, name: str) -> ReceivedSpan:
    found = [s for s in received.spans if s.name == name]
    assert len(found) == 1, [s.name for s in received.spans]
    return found[0]


async def test_an_agent_run_is_one_trace_of_agent_tool_retrieval_and_model_spans(
    tmp_path: Path, make_settings: Callable[..., Settings], receiver: Received
) -> None:
    run = await run_tour(tmp_path, make_settings, receiver, content=False)
    spans = receiver.by_id()
    assert len({s.trace_id for s in receiver.spans}) == 1
    agent = only(receiver, "invoke_agent helper")
    assert agent.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert agent.attributes["gen_ai.agent.name"] == "helper"
    assert agent.attributes["faas.run_id"] == run["id"]
    assert agent.attributes["gen_ai.usage.input_tokens"] == 20
    assert "POST /api/v1/agents/{agent_id}/execute" in ancestors(agent, spans)

    tool = only(receiver, "execute_tool rag_search")
    assert tool.attributes["gen_ai.tool.name"] == "rag_search"
    assert tool.attributes["gen_ai.tool.call.id"] == "c1"
    assert tool.parent_id == agent.span_id
    search = only(receiver, "rag.search")
    assert search.attributes["faas.rag.k"] >= 1
    assert search.attributes["faas.rag.mode"] == "hybrid"
    assert search.attributes["faas.rag.hits"] == 1
    assert "execute_tool rag_search" in ancestors(search, spans)

    render = only(receiver, "prompt.render")
    assert render.attributes["faas.prompt.name"] == "agent.system"
    assert render.attributes["faas.prompt.version"] >= 1

    chats = receiver.named("chat chat-default")
    assert len(chats) == 2
    for chat in chats:
        assert chat.kind == CLIENT
        chain = ancestors(chat, spans)
        # model span < gateway server span < service-client span < agent run
        assert chain[:3] == ["POST /v1/chat/completions", "POST gateway", "invoke_agent helper"]
        attributes = chat.attributes
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["faas.api"] == "chat"
        assert attributes["gen_ai.request.model"] == "chat-default"
        assert attributes["gen_ai.response.model"] == "mock-model"
        assert attributes["gen_ai.provider.name"] == "openai"
        assert "faas.status" not in attributes and "faas.stream" not in attributes
        assert attributes["gen_ai.usage.input_tokens"] == 10
        assert attributes["gen_ai.usage.output_tokens"] == 7
        assert attributes["gen_ai.request.temperature"] == 0.2
        assert attributes["faas.deployment"] == f"openai:mock-model@{run['upstream']}"
        assert attributes["faas.tenant_id"] == "acme"
        assert attributes["faas.cost_usd"] == pytest.approx((10 * 0.5 + 7 * 1.5) / 1000)
        # the refused first deployment is visible as an attempt event
        failed = [attrs for name, attrs in chat.events if name == "faas.attempt.failed"]
        assert failed and failed[0]["deployment"].startswith("openai:mock-broken@")
        assert not [name for name, _ in chat.events if name.startswith("gen_ai.")]
    reasons = sorted(c.attributes["gen_ai.response.finish_reasons"][0] for c in chats)
    assert reasons == ["stop", "tool_calls"]


async def test_content_capture_records_redacted_prompts_and_completions(
    tmp_path: Path, make_settings: Callable[..., Settings], receiver: Received
) -> None:
    await run_tour(tmp_path, make_settings, receiver, content=True)
    last = [c for c in receiver.named("chat chat-default") if len(c.events) > 3][-1]
    events = dict(last.events)
    user = events["gen_ai.user.message"]
    assert user["content"] == "How long do refunds take? Mail me at [EMAIL]"
    assert user["faas.truncated"] is False
    assert "14 days" in events["gen_ai.tool.message"]["content"]
    choice = events["gen_ai.choice"]["content"]
    assert choice == "Refunds take 14 days; call [PHONE] if not."
    everything = orjson.dumps([s.events for s in receiver.spans]).decode()
    assert "ada@example.com" not in everything and "555 2671" not in everything


async def test_a_failed_call_is_an_error_span(
    tmp_path: Path, make_settings: Callable[..., Settings], receiver: Received
) -> None:
    async with MockUpstream() as up:
        settings = make_settings(gateway_models=routing(tmp_path, up))
        async with traced_platform(settings, receiver.url) as (client, _):
            up.control(fail_next=[{"status": 400, "body": {"error": {"message": "bad"}}}])
            body = {"model": "chat-default", "messages": [{"role": "user", "content": "hi"}]}
            response = await client.post("/v1/chat/completions", json=body, headers=A)
            assert response.status_code == 400
    chat = only(receiver, "chat chat-default")
    assert chat.status_code == ERROR
    assert chat.attributes["error.type"]
    assert chat.attributes["faas.status"] == "error"


async def test_a_streamed_call_span_has_its_finish_reason_and_completion(
    tmp_path: Path, make_settings: Callable[..., Settings], receiver: Received
) -> None:
    async with MockUpstream() as up:
        settings = make_settings(gateway_models=routing(tmp_path, up), trace_content=True)
        async with traced_platform(settings, receiver.url) as (client, runtime):
            usage: list[Message] = []

            async def collect(message: Message) -> None:
                usage.append(message)

            await runtime.bus.subscribe("gateway.usage.>", collect)
            up.control(script=[{"role": "assistant", "content": ANSWER}])
            body = {
                "model": "chat-default",
                "stream": True,
                "messages": [{"role": "user", "content": TASK}],
            }
            response = await client.post("/v1/chat/completions", json=body, headers=A)
            assert response.status_code == 200, response.text
            assert "[DONE]" in response.text
    chat = only(receiver, "chat chat-default")
    assert chat.attributes["faas.stream"] is True
    assert list(chat.attributes["gen_ai.response.finish_reasons"]) == ["stop"]
    assert chat.attributes["gen_ai.response.id"] == "chatcmpl-mockupstream"
    assert chat.attributes["gen_ai.usage.output_tokens"] > 0
    events = dict(chat.events)
    assert events["gen_ai.choice"]["content"] == "Refunds take 14 days; call [PHONE] if not."
    # The usage event travels under the model call's span, without a publish span of its own.
    [event] = usage
    assert event.headers["traceparent"].split("-")[2] == chat.span_id
    assert not [s.name for s in receiver.spans if s.name.startswith("publish gateway.usage")]
    assert events["gen_ai.user.message"]["content"].endswith("Mail me at [EMAIL]")


def test_content_events_are_bounded_and_marked_truncated() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("chat m") as span:
        add_content_event(span, "gen_ai.user.message", "x" * (CONTENT_LIMIT + 10))
        add_content_event(span, "gen_ai.choice", "short")
    [finished] = exporter.get_finished_spans()
    long, short = finished.events
    assert len(str(long.attributes["content"])) == CONTENT_LIMIT
    assert long.attributes["faas.truncated"] is True
    assert short.attributes == {"content": "short", "faas.truncated": False}


def test_without_an_exporter_the_gateway_installs_no_span_hook(
    make_settings: Callable[..., Settings],
) -> None:
    assert call_tracing(make_settings(trace_content=True), trace.NoOpTracer()) is None
    assert call_tracing(make_settings(), None) is None
    telemetry = setup_telemetry("t", span_exporter=InMemorySpanExporter(), set_global=False)
    assert call_tracing(make_settings(), telemetry.tracer) is not None
