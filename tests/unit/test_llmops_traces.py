"""LLMOps keeps traces: spans made by the real SDK, encoded by the OTLP exporter's own encoder,
sent to `POST /llmops/otlp/v1/traces` (protobuf and JSON), listed as runs and returned
as trees — and never visible to, or writable into, another tenant."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from faas.services.llmops_service.service import LlmopsService
from faas.shared.config import Settings
from tests.conftest import auth
from tests.platform_app import Platform, platform

A = auth("acme", "ann")
B = auth("globex", "gil")
PLATFORM = auth("ops", "collector", platform_admin=True)
OTLP = "/llmops/otlp/v1/traces"
PROTOBUF = {"content-type": "application/x-protobuf"}


@pytest.fixture
async def env(make_settings: Callable[..., Settings]) -> AsyncIterator[Platform]:
    async with platform(make_settings(), ["llmops"]) as env:
        yield env


def agent_run(session: str = "s1", tenant_attr: str | None = None) -> list[ReadableSpan]:
    """invoke_agent > (chat, execute_tool > rag.search, chat), as the platform emits them."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "faas-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    extra = {"faas.tenant_id": tenant_attr} if tenant_attr else {}
    agent_attrs = {"gen_ai.operation.name": "invoke_agent", "faas.session_id": session}
    with tracer.start_as_current_span("invoke_agent helper", attributes=agent_attrs | extra):
        for reason in ("tool_calls", "stop"):
            chat = tracer.start_span(
                "chat gpt-4o",
                kind=SpanKind.CLIENT,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 10,
                    "gen_ai.usage.output_tokens": 5,
                    "gen_ai.response.finish_reasons": [reason],
                    "faas.cost_usd": 0.25,
                    "faas.api": "chat",
                    **extra,
                },
            )
            chat.add_event("gen_ai.choice", {"content": "[EMAIL]"})
            chat.end()
            if reason == "tool_calls":
                with tracer.start_as_current_span("execute_tool rag_search") as tool:
                    tool.set_status(StatusCode.ERROR)
                    with tracer.start_as_current_span("rag.search", attributes={"faas.rag.k": 3}):
                        pass
    provider.shutdown()
    return list(exporter.get_finished_spans())


def protobuf(spans: list[ReadableSpan]) -> bytes:
    return encode_spans(spans).SerializeToString()


def otlp_json(spans: list[ReadableSpan]) -> bytes:
    """OTLP/JSON: the protobuf JSON mapping, with ids as hex strings."""
    payload = json_format.MessageToDict(encode_spans(spans))
    for resource in payload["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return orjson.dumps(payload)


async def send(env: Platform, body: bytes, headers: dict[str, str], **more: str) -> Any:
    response = await env.client.post(OTLP, content=body, headers=headers | (more or PROTOBUF))
    assert response.status_code == 200, response.text
    return response


async def traces(env: Platform, headers: dict[str, str], **params: str) -> list[dict[str, Any]]:
    response = await env.client.get("/api/v1/llmops/traces", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def test_a_run_is_listed_with_its_model_calls_tokens_and_cost(env: Platform) -> None:
    spans = agent_run()
    answer = await send(env, protobuf(spans), A)
    assert answer.headers["content-type"] == "application/x-protobuf"
    [run] = await traces(env, A)
    assert run["trace_id"] == format(spans[0].context.trace_id, "032x")
    assert run["name"] == "invoke_agent helper"
    assert run["spans"] == 5 and run["errors"] == 1
    # only the two model calls count: the agent span's own totals are not summed again
    assert (run["input_tokens"], run["output_tokens"]) == (20, 10)
    assert run["cost_usd"] == pytest.approx(0.5)
    assert run["session_id"] == "s1"


async def test_the_trace_is_a_tree_of_steps_model_calls_tools_and_retrievals(
    env: Platform,
) -> None:
    spans = agent_run()
    await send(env, protobuf(spans), A)
    trace_id = format(spans[0].context.trace_id, "032x")
    response = await env.client.get(f"/api/v1/llmops/traces/{trace_id}", headers=A)
    assert response.status_code == 200, response.text
    tree = response.json()["data"]
    [root] = tree["roots"]
    assert root["name"] == "invoke_agent helper" and root["service"] == "faas-agent"
    children = [c["name"] for c in root["children"]]
    assert children == ["chat gpt-4o", "execute_tool rag_search", "chat gpt-4o"]
    chat, tool, _ = root["children"]
    assert chat["kind"] == "client" and chat["input_tokens"] == 10
    assert chat["attributes"]["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert chat["events"][0]["name"] == "gen_ai.choice"
    assert tool["status"] == "error"
    assert [c["name"] for c in tool["children"]] == ["rag.search"]
    assert tool["children"][0]["attributes"]["faas.rag.k"] == 3
    assert root["duration_ms"] >= tool["duration_ms"] >= 0


async def test_otlp_json_is_accepted_and_a_resend_is_stored_once(env: Platform) -> None:
    spans = agent_run()
    answer = await send(env, otlp_json(spans), A, **{"content-type": "application/json"})
    assert answer.json() == {}
    await send(env, protobuf(spans), A)
    [run] = await traces(env, A)
    assert run["spans"] == 5


async def test_tenants_never_see_or_write_each_others_traces(env: Platform) -> None:
    own = agent_run()
    await send(env, protobuf(own), A)
    # a tenant naming another tenant in its spans still writes into its own traces
    await send(env, protobuf(agent_run(session="s2", tenant_attr="globex")), A)
    assert await traces(env, B) == []
    trace_id = format(own[0].context.trace_id, "032x")
    hidden = await env.client.get(f"/api/v1/llmops/traces/{trace_id}", headers=B)
    assert hidden.status_code == 404
    assert len(await traces(env, A)) == 2
    # B asking for acme's traces by name gets its own (empty) answer
    assert await traces(env, B, tenant_id="acme") == []


async def test_a_platform_sender_files_spans_under_the_tenant_they_name(env: Platform) -> None:
    await send(env, protobuf(agent_run(tenant_attr="globex")), PLATFORM)
    assert await traces(env, A) == []
    [run] = await traces(env, B)
    assert run["name"] == "invoke_agent helper"


async def test_sessions_group_runs(env: Platform) -> None:
    await send(env, protobuf(agent_run(session="s1")), A)
    await send(env, protobuf(agent_run(session="s2")), A)
    await send(env, protobuf(agent_run(session="s1")), A)
    assert len(await traces(env, A, session_id="s1")) == 2
    assert len(await traces(env, A, session_id="s2")) == 1
    assert len(await traces(env, A)) == 3


async def test_bad_payloads_are_4xx(env: Platform) -> None:
    wrong_type = await env.client.post(
        OTLP, content=b"x", headers=A | {"content-type": "text/plain"}
    )
    assert wrong_type.status_code == 415
    garbage = await env.client.post(OTLP, content=b"\xff\xff\xff", headers=A | PROTOBUF)
    assert garbage.status_code == 422
    bad_json = await env.client.post(
        OTLP, content=b'{"resourceSpans": 3}', headers=A | {"content-type": "application/json"}
    )
    assert bad_json.status_code == 422
    for scalar in (b"false", b"[]", b'"x"'):
        not_object = await env.client.post(
            OTLP, content=scalar, headers=A | {"content-type": "application/json"}
        )
        assert not_object.status_code == 422, scalar
    far = encode_spans(agent_run())
    far.resource_spans[0].scope_spans[0].spans[0].end_time_unix_nano = 2**63
    too_late = await env.client.post(OTLP, content=far.SerializeToString(), headers=A | PROTOBUF)
    assert too_late.status_code == 422
    bad_id = await env.client.get("/api/v1/llmops/traces/nothex", headers=A)
    assert bad_id.status_code == 422
    anonymous = await env.client.post(OTLP, content=protobuf(agent_run()), headers=PROTOBUF)
    assert anonymous.status_code == 401


async def test_retention_prunes_old_spans(env: Platform) -> None:
    await send(env, protobuf(agent_run()), A)
    service = env.app.state.services["llmops"]
    assert isinstance(service, LlmopsService)
    assert await service.traces.purge(90) == 0
    later = datetime.now(UTC) + timedelta(days=91)
    assert await service.traces.purge(90, later) == 5
    assert await traces(env, A) == []
