"""Each service's typed client against the real in-process app (`faas up` in one process):
typed answers, and a 404 or 422 of the target raised here as the shared error with the same
status and code."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from faas.services.agent_service.client import AgentClient
from faas.services.agent_service.models import AgentSpec, AgentView, ExpressionToolSpec, ToolView
from faas.services.cache_service.client import CacheClient
from faas.services.cache_service.models import CacheSetRequest
from faas.services.gateway_service.client import GatewayClient
from faas.services.prompt_service.client import CACHED_RENDER_MAX_CHARS, PromptClient
from faas.services.prompt_service.models import ChatMessage, ContextRequest, RenderRequest
from faas.services.rag_service.client import RagClient
from faas.services.rag_service.models import DocumentCreate, SearchRequest
from faas.shared.config import Settings
from faas.shared.context import Identity, RequestContext, reset_context, set_context
from faas.shared.exceptions import FaaSError, NotFound, ValidationFailed
from tests.conftest import auth, token_for
from tests.platform_app import Platform, platform

CHAT = "chat-default"
REFUNDS = "Refunds are paid within 14 days after the returned item arrives at our warehouse."


@pytest.fixture
async def env(tmp_path: Any, make_settings: Callable[..., Settings]) -> AsyncIterator[Platform]:
    routing = tmp_path / "models.yaml"
    routing.write_text(
        "models:\n"
        f"  - name: {CHAT}\n    deployments:\n      - provider: mock\n"
        "  - name: embed-default\n    kind: embedding\n    deployments:\n      - provider: hash\n"
    )
    settings = make_settings(gateway_models=routing)
    async with platform(settings, ["gateway", "cache", "rag", "prompt", "agent"]) as env:
        yield env


@contextmanager
def acting_as(tenant: str = "acme", user: str = "u1") -> Iterator[None]:
    """Service calls forward the request context's identity: a caller inside a request."""
    identity = Identity(tenant_id=tenant, user_id=user, token=token_for(tenant, user))
    token = set_context(RequestContext("corr", "req", identity=identity))
    try:
        yield
    finally:
        reset_context(token)


def assert_error(exc: FaaSError, error: type[FaaSError], status: int, code: str) -> None:
    assert isinstance(exc, error)
    assert (exc.status_code, exc.code) == (status, code)


def ask(text: str) -> dict[str, Any]:
    return {"model": CHAT, "messages": [{"role": "user", "content": text}], "max_tokens": 32}


# -- gateway ------------------------------------------------------------------------------------


async def test_gateway_chat_returns_the_openai_completion_and_its_text(env: Platform) -> None:
    gateway = GatewayClient(env.runtime.clients)
    with acting_as():
        completion = await gateway.chat(ask("What is a semantic cache?"))
        text = await gateway.chat_text(ask("What is a semantic cache?"))
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["role"] == "assistant"
    assert completion["usage"]["total_tokens"] > 0
    assert isinstance(text, str) and text


async def test_gateway_stream_chat_yields_chunks_then_usage(env: Platform) -> None:
    gateway = GatewayClient(env.runtime.clients)
    with acting_as():
        async with gateway.stream_chat(ask("Say hello")) as chunks:
            received = [chunk async for chunk in chunks]
    text = "".join(
        (choice.get("delta") or {}).get("content") or ""
        for chunk in received
        for choice in chunk.get("choices") or []
    )
    assert text
    assert received[-1]["usage"]["total_tokens"] > 0


async def test_gateway_refusal_of_a_stream_is_raised_before_the_first_chunk(
    env: Platform,
) -> None:
    gateway = GatewayClient(env.runtime.clients)
    with acting_as(), pytest.raises(NotFound) as raised:
        async with gateway.stream_chat({**ask("hi"), "model": "no-such-model"}):
            pytest.fail("a refused stream must not open")
    assert_error(raised.value, NotFound, 404, "not_found")


async def test_gateway_errors_keep_status_and_code(env: Platform) -> None:
    gateway = GatewayClient(env.runtime.clients)
    with acting_as():
        with pytest.raises(NotFound) as unknown:
            await gateway.chat({**ask("hi"), "model": "no-such-model"})
        with pytest.raises(ValidationFailed) as invalid:
            await gateway.chat({"model": CHAT, "messages": []})
    assert_error(unknown.value, NotFound, 404, "not_found")
    assert_error(invalid.value, ValidationFailed, 422, "validation_failed")


async def test_gateway_embed_returns_a_float32_matrix_and_its_deployment(env: Platform) -> None:
    gateway = GatewayClient(env.runtime.clients)
    with acting_as():
        embedded = await gateway.embed(["a semantic cache", "a vector index"])
    assert embedded.vectors.dtype == np.float32
    assert embedded.vectors.shape[0] == 2 and embedded.vectors.shape[1] > 0
    assert embedded.model == "embed-default"
    assert embedded.deployment.startswith("hash")


async def test_gateway_chat_models_lists_only_chat_models(env: Platform) -> None:
    with acting_as():
        assert await GatewayClient(env.runtime.clients).chat_models() == {CHAT}


# -- rag ----------------------------------------------------------------------------------------


async def test_rag_indexes_a_document_once_and_finds_it(env: Platform) -> None:
    rag = RagClient(env.runtime.clients)
    document = DocumentCreate(title="Refund policy", content=REFUNDS, metadata={"topic": "r"})
    with acting_as():
        created = await rag.add_document(document)
        again = await rag.add_document(document)
        found = await rag.search(SearchRequest(query_text="when are refunds paid", top_k=3))
    assert created.chunks >= 1 and not created.duplicate
    assert again.duplicate and again.document_id == created.document_id
    assert found.mode == "hybrid"
    assert [hit.document_id for hit in found.results] == [created.document_id]
    assert found.results[0].title == "Refund policy"


async def test_rag_errors_keep_status_and_code(env: Platform) -> None:
    rag = RagClient(env.runtime.clients)
    with acting_as():
        with pytest.raises(NotFound) as unknown:
            await rag.search(SearchRequest(query_text="refunds", collection="nowhere"))
        with pytest.raises(ValidationFailed) as invalid:
            await rag.search(SearchRequest(query_embedding=[1e39], mode="vector"))
    assert_error(unknown.value, NotFound, 404, "not_found")
    assert_error(invalid.value, ValidationFailed, 422, "validation_failed")


# -- prompt -------------------------------------------------------------------------------------


async def store_greeting(env: Platform) -> None:
    created = await env.client.post(
        "/api/v1/prompts/templates",
        json={"name": "greet", "content": "Hello {{ name }}!", "labels": ["production"]},
        headers=auth("acme"),
    )
    assert created.status_code == 201, created.text


async def test_prompt_renders_a_stored_template(env: Platform) -> None:
    await store_greeting(env)
    with acting_as():
        rendered = await PromptClient(env.runtime.clients).render(
            RenderRequest(name="greet", variables={"name": "Ada"})
        )
    assert (rendered.rendered, rendered.name, rendered.version) == ("Hello Ada!", "greet", 1)


async def test_prompt_renders_are_reused_per_tenant_and_variables_for_the_ttl(
    env: Platform,
) -> None:
    """With `cache_ttl_s`, the same tenant's render of the same template and variables is
    answered from the client until the TTL passes; another tenant, other variables or a
    pinned version are asked for afresh, and a template's new version shows after the TTL."""
    await store_greeting(env)
    now = [0.0]
    prompt = PromptClient(env.runtime.clients, cache_ttl_s=5.0, clock=lambda: now[0])
    sent: list[str] = []
    http = env.runtime.clients.get("prompt")
    original = http.request

    async def counting(method: str, path: str, **kwargs: Any) -> Any:
        sent.append(str((kwargs.get("json") or {}).get("variables")))
        return await original(method, path, **kwargs)

    http.request = counting  # type: ignore[method-assign]
    ada = RenderRequest(name="greet", variables={"name": "Ada"})
    try:
        with acting_as("acme"):
            first = await prompt.render(ada)
            again = await prompt.render(ada)
            other = await prompt.render(RenderRequest(name="greet", variables={"name": "Bo"}))
        # The same template name and variables, another tenant: asked for, and not there.
        with acting_as("globex"), pytest.raises(NotFound):
            await prompt.render(ada)
        created = await env.client.post(
            "/api/v1/prompts/templates",
            json={"name": "greet", "content": "Hi {{ name }}.", "labels": ["production"]},
            headers=auth("acme"),
        )
        assert created.status_code == 201, created.text
        with acting_as("acme"):
            within = await prompt.render(ada)
            now[0] = 5.0
            after = await prompt.render(ada)
    finally:
        http.request = original  # type: ignore[method-assign]
    assert (first.rendered, first.cached) == ("Hello Ada!", False)
    assert (again.rendered, again.cached) == ("Hello Ada!", True)
    assert other.rendered == "Hello Bo!"
    assert within.rendered == "Hello Ada!"  # the TTL's promise: up to 5 s late
    assert (after.rendered, after.version) == ("Hi Ada.", 2)
    assert sent == ["{'name': 'Ada'}", "{'name': 'Bo'}", "{'name': 'Ada'}", "{'name': 'Ada'}"]


async def test_a_long_render_is_not_kept_by_the_client(env: Platform) -> None:
    created = await env.client.post(
        "/api/v1/prompts/templates",
        json={"name": "long", "content": "{{ 'x' * n }}", "labels": ["production"]},
        headers=auth("acme"),
    )
    assert created.status_code == 201, created.text
    prompt = PromptClient(env.runtime.clients, cache_ttl_s=60.0)
    with acting_as("acme"):
        for size in (CACHED_RENDER_MAX_CHARS, CACHED_RENDER_MAX_CHARS + 1):
            await prompt.render(RenderRequest(name="long", variables={"n": size}))
    assert [len(kept.rendered) for _, kept in prompt._renders._data.values()] == [
        CACHED_RENDER_MAX_CHARS
    ]


async def test_prompt_builds_a_context_within_the_budget(env: Platform) -> None:
    history = [
        ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"message {i} " * 40)
        for i in range(20)
    ]
    with acting_as():
        context = await PromptClient(env.runtime.clients).build_context(
            ContextRequest(messages=history, max_tokens=300)
        )
    assert 0 < len(context.messages) < len(history)
    assert context.messages[-1]["content"] == history[-1].content
    assert context.token_count <= 300 and context.dropped > 0 and not context.summarized


async def test_prompt_errors_keep_status_and_code(env: Platform) -> None:
    await store_greeting(env)
    prompt = PromptClient(env.runtime.clients)
    with acting_as():
        with pytest.raises(NotFound) as unknown:
            await prompt.render(RenderRequest(name="never-stored"))
        with pytest.raises(ValidationFailed) as invalid:
            await prompt.render(RenderRequest(name="greet"))
    assert_error(unknown.value, NotFound, 404, "not_found")
    assert_error(invalid.value, ValidationFailed, 422, "validation_failed")
    assert invalid.value.details["variable"] == "name"
    assert invalid.value.details["service"] == "prompt"


# -- cache --------------------------------------------------------------------------------------


async def test_cache_stores_and_reads_a_value(env: Platform) -> None:
    cache = CacheClient(env.runtime.clients)
    with acting_as():
        stored = await cache.set(
            CacheSetRequest(key="greeting", value={"text": "hi"}, ttl_s=60, namespace="ns")
        )
        entry = await cache.get("greeting", namespace="ns")
        elsewhere = await cache.get("greeting")
    assert (stored.key, stored.namespace, stored.ttl_s) == ("greeting", "ns", 60)
    assert entry.found and entry.value == {"text": "hi"}
    assert not elsewhere.found and elsewhere.value is None


async def test_cache_errors_keep_status_and_code(env: Platform) -> None:
    cache = CacheClient(env.runtime.clients)
    with acting_as():
        with pytest.raises(ValidationFailed) as invalid:
            await cache.get("greeting", namespace="not a name!")
        with pytest.raises(ValidationFailed) as reserved:
            await cache.get("stats")
    assert_error(invalid.value, ValidationFailed, 422, "validation_failed")
    assert_error(reserved.value, ValidationFailed, 422, "validation_failed")


# -- agent --------------------------------------------------------------------------------------


async def test_agent_creates_reads_and_lists(env: Platform) -> None:
    agents = AgentClient(env.runtime.clients)
    spec = AgentSpec(name="helper", model=CHAT, tools=["calculator"])
    vat = ExpressionToolSpec(
        name="with_vat",
        description="A net price with 20% VAT added",
        expression="price * 1.2",
        parameters={
            "type": "object",
            "properties": {"price": {"type": "number"}},
            "required": ["price"],
        },
    )
    with acting_as():
        created = await agents.create_agent(spec, origin="prompt_generator")
        read = await agents.get_agent(created.id)
        tool = await agents.create_tool(vat)
        tools = await agents.list_tools()
    assert isinstance(created, AgentView) and created.origin == "prompt_generator"
    assert created.created_by == "u1"
    assert read.id == created.id and read.tools == ["calculator"]
    assert isinstance(tool, ToolView) and (tool.name, tool.kind) == ("with_vat", "expression")
    assert tool.origin is None
    assert {"calculator", "with_vat"} <= {t.name for t in tools}


async def test_agent_errors_keep_status_and_code(env: Platform) -> None:
    agents = AgentClient(env.runtime.clients)
    with acting_as():
        with pytest.raises(NotFound) as unknown:
            await agents.get_agent("no-such-agent")
        with pytest.raises(ValidationFailed) as invalid:
            await agents.create_agent(AgentSpec(name="x", model="no-such-model"))
    assert_error(unknown.value, NotFound, 404, "not_found")
    assert_error(invalid.value, ValidationFailed, 422, "validation_failed")


async def test_another_tenant_cannot_read_an_agent(env: Platform) -> None:
    agents = AgentClient(env.runtime.clients)
    with acting_as("acme"):
        created = await agents.create_agent(AgentSpec(name="mine", model=CHAT))
    with acting_as("globex"), pytest.raises(NotFound):
        await agents.get_agent(created.id)
