"""The prompt service through the real app, with the gateway in-process (mock chat): immutable
versions and labels, sandboxed rendering (SSTI payloads refused), schemas, caches, default
templates per tenant, tenant isolation, and context-window trimming and summaries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from faas.services.prompt_service.context import SUMMARY_PREFIX
from faas.shared.config import Settings
from faas.shared.tokens import count_chat_tokens
from tests.conftest import auth
from tests.platform_app import Platform, platform

A = auth("acme")
B = auth("globex")
BASE = "/api/v1/prompts"


@pytest.fixture
async def env(tmp_path: Any, make_settings: Callable[..., Settings]) -> AsyncIterator[Platform]:
    routing = tmp_path / "models.yaml"
    routing.write_text(
        "models:\n"
        "  - name: chat-default\n    deployments:\n      - provider: mock\n"
        "  - name: embed-default\n    kind: embedding\n    deployments:\n      - provider: hash\n"
    )
    async with platform(make_settings(gateway_models=routing), ["gateway", "prompt"]) as env:
        yield env


async def create(
    env: Platform, name: str, content: str, headers: dict[str, str] = A, **extra: Any
) -> dict[str, Any]:
    body = {"name": name, "content": content, **extra}
    response = await env.client.post(f"{BASE}/templates", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


async def render(env: Platform, headers: dict[str, str] = A, **body: Any) -> Any:
    return await env.client.post(f"{BASE}/render", json=body, headers=headers)


async def get(env: Platform, name: str, headers: dict[str, str] = A, **params: Any) -> Any:
    return await env.client.get(f"{BASE}/templates/{name}", params=params, headers=headers)


async def test_versions_are_immutable_and_increment(env: Platform) -> None:
    one = await create(env, "greet", "Hello {{ name }}!", description="greeting")
    two = await create(env, "greet", "Hi {{ name }}.")
    assert (one["version"], two["version"]) == (1, 2)
    first = (await get(env, "greet", version=1)).json()["data"]
    assert first["content"] == "Hello {{ name }}!" and first["description"] == "greeting"
    assert (await get(env, "greet", version=3)).status_code == 404
    versions = (await env.client.get(f"{BASE}/templates/greet/versions", headers=A)).json()
    assert [v["version"] for v in versions["data"]] == [2, 1]
    listed = (await env.client.get(f"{BASE}/templates", headers=A)).json()["data"]
    greet = next(t for t in listed["items"] if t["name"] == "greet")
    assert greet["latest_version"] == 2 and greet["labels"] == {}
    assert listed["total"] == 4  # greet + the three defaults


async def test_labels_move_and_default_resolution(env: Platform) -> None:
    await create(env, "p", "v1", labels=["production"])
    await create(env, "p", "v2", labels=["staging"])
    # The default is the production label, not the newest version.
    default = (await get(env, "p")).json()["data"]
    assert default["version"] == 1 and default["labels"] == ["production"]
    assert (await get(env, "p", label="staging")).json()["data"]["content"] == "v2"
    assert (await get(env, "p", label="latest")).json()["data"]["version"] == 2
    assert (await get(env, "p", label="nope")).status_code == 404
    moved = await env.client.post(
        f"{BASE}/templates/p/labels", json={"label": "production", "version": 2}, headers=A
    )
    assert moved.status_code == 200, moved.text
    now = (await get(env, "p")).json()["data"]
    assert now["version"] == 2 and now["labels"] == ["production", "staging"]
    missing = await env.client.post(
        f"{BASE}/templates/p/labels", json={"label": "production", "version": 9}, headers=A
    )
    assert missing.status_code == 404
    latest = await env.client.post(
        f"{BASE}/templates/p/labels", json={"label": "latest", "version": 1}, headers=A
    )
    assert latest.status_code == 422


async def test_without_production_label_the_newest_version_is_the_default(env: Platform) -> None:
    await create(env, "q", "one")
    await create(env, "q", "two")
    assert (await get(env, "q")).json()["data"]["version"] == 2


async def test_render_with_variables_and_schema(env: Platform) -> None:
    schema = {
        "type": "object",
        "properties": {"user": {"type": "object", "properties": {"age": {"type": "integer"}}}},
        "required": ["user"],
    }
    await create(env, "bio", "{{ user.name }} is {{ user.age }}.", variables_schema=schema)
    ok = await render(env, name="bio", variables={"user": {"name": "Ada", "age": 36}, "x": 1})
    assert ok.status_code == 200, ok.text
    data = ok.json()["data"]
    assert data["rendered"] == "Ada is 36." and data["version"] == 1
    assert data["variables_used"] == ["user"]
    bad = await render(env, name="bio", variables={"user": {"name": "Ada", "age": "old"}})
    assert bad.status_code == 422
    assert bad.json()["error"]["details"]["path"] == "$.user.age"
    absent = await render(env, name="bio", variables={})
    assert absent.status_code == 422 and "user" in absent.json()["error"]["message"]


async def test_missing_variable_is_named(env: Platform) -> None:
    await create(env, "m", "line one\n{{ present }}\n{{ absent_var }}")
    response = await render(env, name="m", variables={"present": 1})
    assert response.status_code == 422
    error = response.json()["error"]
    assert "absent_var" in error["message"]
    assert error["details"]["variable"] == "absent_var" and error["details"]["line"] == 3


async def test_syntax_error_is_422_with_its_line(env: Platform) -> None:
    response = await env.client.post(
        f"{BASE}/templates", json={"name": "broken", "content": "ok\nfine\n{{ x }"}, headers=A
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["details"]["line"] == 3 and "line 3" in error["message"]
    assert (await get(env, "broken")).status_code == 404  # nothing was stored
    bad_schema = await env.client.post(
        f"{BASE}/templates",
        json={"name": "s", "content": "x", "variables_schema": {"type": "nonsense"}},
        headers=A,
    )
    assert bad_schema.status_code == 422


SSTI = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c.__name__ }}{% endfor %}",
    "{{ config }}",
    "{{ lipsum.__globals__ }}",
    "{{ config.__class__.__init__.__globals__['os'].popen('id').read() }}",
    "{{ x.__class__.__base__.__subclasses__() }}",
    "{{ ''.format.__globals__ }}",
    "{{ 'a' * 100000000 }}",
    "{{ 'x'|center(100000000) }}",
    "{{ '{:>100000000}'.format(1) }}",
    "{% for i in range(100) %}{{ 'a' * 20000 }}{% endfor %}",
]
LEAKS = ("<class", "subclasses", "__", "uid=", "function", "module", "built-in", "os.")


async def test_ssti_payloads_are_refused(env: Platform) -> None:
    for i, payload in enumerate(SSTI):
        await create(env, f"evil{i}", payload)
        response = await render(env, name=f"evil{i}", variables={"x": "text"})
        assert response.status_code == 422, (payload, response.text)
        assert not response.json().get("data"), payload
        body = response.text
        assert "uid=" not in body and "<class 'subprocess" not in body, payload


async def test_sandbox_renders_harmless_templates_without_internals(env: Platform) -> None:
    await create(env, "safe", "{{ x|upper }} {{ items|join(',') }} {{ x.startswith('t') }}")
    data = (await render(env, name="safe", variables={"x": "text", "items": [1, 2]})).json()
    assert data["data"]["rendered"] == "TEXT 1,2 True"
    assert not any(leak in data["data"]["rendered"] for leak in LEAKS)


async def test_render_cache_is_invalidated_by_new_versions_and_labels(env: Platform) -> None:
    await create(env, "c", "v1 {{ n }}", labels=["production"])
    first = (await render(env, name="c", variables={"n": 1})).json()["data"]
    again = (await render(env, name="c", variables={"n": 1})).json()["data"]
    assert first["rendered"] == again["rendered"] == "v1 1"
    assert again["cached"] is True
    await create(env, "c", "v2 {{ n }}")
    # A new version without the label leaves production where it was.
    assert (await render(env, name="c", variables={"n": 1})).json()["data"]["rendered"] == "v1 1"
    await env.client.post(
        f"{BASE}/templates/c/labels", json={"label": "production", "version": 2}, headers=A
    )
    after = (await render(env, name="c", variables={"n": 1})).json()["data"]
    assert after["rendered"] == "v2 1" and after["version"] == 2
    # Delete and recreate the name: the old version 1 must not come back from a cache.
    assert (await env.client.delete(f"{BASE}/templates/c", headers=A)).status_code == 204
    await create(env, "c", "fresh {{ n }}")
    assert (await render(env, name="c", variables={"n": 1})).json()["data"]["rendered"] == (
        "fresh 1"
    )


async def test_defaults_are_seeded_per_tenant_and_render(env: Platform) -> None:
    for headers in (A, B):
        view = (await get(env, "rag.answer", headers=headers)).json()["data"]
        assert view["version"] == 1 and view["labels"] == ["production"]
        assert "[n]" in view["content"] or "[1]" in view["content"]
        names = {
            t["name"]
            for t in (await env.client.get(f"{BASE}/templates", headers=headers)).json()["data"][
                "items"
            ]
        }
        assert {"rag.answer", "agent.system", "agent.summarize_memory"} <= names
    sources = [{"n": 1, "title": "Refunds", "text": "Refunds take 14 days."}]
    rendered = await render(
        env, name="rag.answer", variables={"question": "How long?", "sources": sources}
    )
    text = rendered.json()["data"]["rendered"]
    assert "[1] Refunds\nRefunds take 14 days." in text and "How long?" in text
    assert "square brackets" in text
    bad = await render(env, name="rag.answer", variables={"question": "q", "sources": [{"n": 1}]})
    assert bad.status_code == 422 and bad.json()["error"]["details"]["path"] == "$.sources[0]"
    system = await render(env, name="agent.system", variables={"agent_name": "Bob"})
    assert system.json()["data"]["rendered"].startswith("You are Bob.")


async def test_tenant_isolation(env: Platform) -> None:
    await create(env, "secret", "A's prompt {{ x }}")
    assert (await get(env, "secret", headers=B)).status_code == 404
    assert (await render(env, B, name="secret", variables={"x": 1})).status_code == 404
    label = await env.client.post(
        f"{BASE}/templates/secret/labels", json={"label": "production", "version": 1}, headers=B
    )
    assert label.status_code == 404
    assert (await env.client.delete(f"{BASE}/templates/secret", headers=B)).status_code == 404
    versions = await env.client.get(f"{BASE}/templates/secret/versions", headers=B)
    assert versions.status_code == 404
    # B's own rag.answer is independent of A's.
    await create(env, "rag.answer", "B's answer {{ question }}", headers=B, labels=["production"])
    a_view = (await get(env, "rag.answer")).json()["data"]
    b_view = (await get(env, "rag.answer", headers=B)).json()["data"]
    assert a_view["version"] == 1 and b_view["version"] == 2
    assert a_view["content"] != b_view["content"]
    assert (await get(env, "secret")).status_code == 200


def conversation(turns: int) -> list[dict[str, str]]:
    return [
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"message {i}: " + "lorem ipsum dolor sit amet " * 5,
        }
        for i in range(turns)
    ]


async def context(env: Platform, **body: Any) -> Any:
    return await env.client.post(f"{BASE}/context", json=body, headers=A)


async def test_context_truncate_keeps_system_and_newest_exactly(env: Platform) -> None:
    history = [{"role": "system", "content": "Be brief."}, *conversation(20)]
    budget = 300
    response = await context(env, messages=history, max_tokens=budget, strategy="truncate")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    kept = data["messages"]
    assert kept[0] == {"role": "system", "content": "Be brief."}
    assert data["token_count"] == count_chat_tokens(kept) <= budget
    # The newest messages, in order, and exactly as many as fit: one more would not.
    assert kept[1:] == history[len(history) - len(kept) + 1 :]
    assert data["dropped"] == 20 - (len(kept) - 1) > 0
    one_more = [kept[0], history[len(history) - len(kept)], *kept[1:]]
    assert count_chat_tokens(one_more) > budget
    assert data["summarized"] is False


async def test_context_explicit_system_prompt_and_limits(env: Platform) -> None:
    response = await context(env, messages=conversation(3), system_prompt="S", max_tokens=10_000)
    data = response.json()["data"]
    assert data["dropped"] == 0 and len(data["messages"]) == 4
    assert data["messages"][0] == {"role": "system", "content": "S"}
    too_small = await context(env, messages=[], system_prompt="word " * 50, max_tokens=20)
    assert too_small.status_code == 422
    assert "system prompt" in too_small.json()["error"]["message"]


async def test_context_summarize_replaces_oldest_turns(env: Platform) -> None:
    history = [{"role": "system", "content": "Be brief."}, *conversation(30)]
    budget = 600
    response = await context(env, messages=history, max_tokens=budget, strategy="summarize")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["summarized"] is True, data
    kept = data["messages"]
    assert kept[0]["content"] == "Be brief."
    summary = kept[1]
    assert summary["role"] == "system" and summary["content"].startswith(SUMMARY_PREFIX)
    assert "[mock]" in summary["content"]
    assert kept[2:] == history[len(history) - len(kept) + 2 :]
    assert data["dropped"] == 30 - (len(kept) - 2)
    assert data["token_count"] == count_chat_tokens(kept) <= budget


async def test_context_summarize_without_room_falls_back_to_truncate(env: Platform) -> None:
    history = conversation(10)
    response = await context(env, messages=history, max_tokens=25, strategy="summarize")
    data = response.json()["data"]
    assert data["summarized"] is False and data["note"]
    assert data["token_count"] == count_chat_tokens(data["messages"]) <= 25


async def test_context_keeps_tool_calls_and_drops_orphan_tool_results(env: Platform) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{}"}}
    history = [
        *conversation(6),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "42 " * 30},
        {"role": "assistant", "content": "The answer is 42."},
    ]
    full = await context(env, messages=history, max_tokens=10_000)
    assert full.json()["data"]["messages"] == history
    tool_and_answer = count_chat_tokens(history[-2:])
    response = await context(env, messages=history, max_tokens=tool_and_answer + 2)
    data = response.json()["data"]
    # The tool result fits but its tool call does not: it must not start the window.
    assert data["messages"] == [history[-1]]
    assert data["token_count"] == count_chat_tokens(data["messages"])
