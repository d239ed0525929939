"""Template rendering is bounded: operations across nested loops, wall time (an injected clock),
output bytes and the size of any single value; a cancelled request and the service's stop end
a render in flight; compiling, rendering and token counting run off the event loop; version
numbers stay within what the databases hold."""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import types
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from faas.services.prompt_service import context as prompt_service_module
from faas.services.prompt_service import stored_templates, templates
from faas.services.prompt_service.budget import RenderBudget, RenderLimits
from faas.services.prompt_service.defaults import DEFAULT_TEMPLATES
from faas.services.prompt_service.rendering import TemplateRenderer
from faas.shared.config import Settings
from faas.shared.cpu import INLINE_CHARS, json_chars
from faas.shared.exceptions import DependencyUnavailable, ValidationFailed
from tests.conftest import auth
from tests.platform_app import Platform, platform

A = auth("acme")
BASE = "/api/v1/prompts"
NESTED_LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
UNBOUNDED = RenderLimits(max_operations=10**15, timeout_s=10**6, max_output_bytes=10**9)
HANG_GUARD_S = 60  # only reached when the behaviour under test is broken


def render_now(source: str, variables: dict[str, Any] | None = None, **limits: Any) -> str:
    budget = RenderBudget(RenderLimits(**limits), templates.TEMPLATE_FILENAME)
    return templates.render(templates.compile_template(source), variables or {}, budget)


def refusal(source: str, variables: dict[str, Any] | None = None, **limits: Any) -> Any:
    with pytest.raises(ValidationFailed) as caught:
        render_now(source, variables, **limits)
    return caught.value


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(HANG_GUARD_S):
        while not condition():
            await asyncio.sleep(0.005)


async def started_render(renderer: TemplateRenderer) -> RenderBudget:
    await until(lambda: bool(renderer.running))
    budget = next(iter(renderer.running))
    assert await asyncio.to_thread(budget.started.wait, HANG_GUARD_S)
    return budget


# -- the budget, rendering in this thread ---------------------------------------------------


def test_nested_loops_stop_at_the_operation_budget() -> None:
    error = refusal(NESTED_LOOPS, max_operations=20_000)
    assert error.details["limit"] == "render_operations"
    assert error.details["max"] == 20_000


def test_loops_over_variables_count_as_well_as_ranges() -> None:
    items = list(range(1000))
    error = refusal(
        "{% for a in items %}{% for b in items %}{% for c in items %}{% endfor %}{% endfor %}"
        "{% endfor %}",
        {"items": items},
        max_operations=20_000,
    )
    assert error.details["limit"] == "render_operations"


def test_recursive_macros_count_their_calls() -> None:
    source = (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}"
    )
    # 20,000 macro calls take about a second here: with the default 2 s deadline a loaded
    # machine hit the deadline first (a CI-like run on 2026-12-07), which is not what this tests.
    error = refusal(source, max_operations=20_000, timeout_s=HANG_GUARD_S)
    assert error.details["limit"] == "render_operations"


def test_the_deadline_is_read_from_the_injected_clock() -> None:
    seconds = itertools.count()  # every read of the clock is one second later
    limits = RenderLimits(max_operations=10**15, timeout_s=30)
    budget = RenderBudget(limits, templates.TEMPLATE_FILENAME, lambda: float(next(seconds)))
    with pytest.raises(ValidationFailed) as caught:
        templates.render(templates.compile_template(NESTED_LOOPS), {}, budget)
    assert caught.value.details == {"limit": "render_timeout_s", "max": 30, "line": 1}


def test_output_is_capped_in_bytes() -> None:
    error = refusal("{% for i in range(100000) %}{{ 'x' * 20 }}{% endfor %}")
    assert error.details["limit"] == "render_output_bytes"
    assert error.details["max"] == 1_000_000
    # Characters count as their UTF-8 size: 402 characters, 201 x (2 + 3) bytes > 1,000.
    assert refusal("{{ 'é€' * 201 }}", max_output_bytes=1000).details["max"] == 1000
    assert render_now("{{ 'é€' * 100 }}", max_output_bytes=1000) == "é€" * 100


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 10**9 }}",
        "{{ (range(100000)|list) * 11 }}",
        # Doubling by + and ~ : each step is one unchecked C call in plain Jinja.
        "{% set a = 'x' * 999999 %}{% set b = a + a %}{% set c = b + b %}{{ c|length }}",
        "{% set a = 'x' * 999999 %}{% set b = a ~ a %}{% set c = b ~ b %}{{ c|length }}",
        "{% set a = ['x'] * 999999 %}{% set b = a + a %}{{ b|length }}",
        # Small containers that print as gigabytes.
        "{% set a = 'x' * 999999 %}{% set b = [a] * 300 %}{{ b|length }}",
        "{% set a = 'x' * 9999 %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}"
        "{% set c = [b, b, b, b, b, b, b, b, b, b] %}{% set d = [c, c, c, c, c, c, c, c, c, c] %}"
        "{{ d }}",
        "{% set a = 'x' * 9999 %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}"
        "{% set c = [b, b, b, b, b, b, b, b, b, b] %}{% set d = [c, c, c, c, c, c, c, c, c, c] %}"
        "{{ d|join(',') }}",
        "{% set a = 'x' * 99999 %}{% set d = [a, a, a, a, a, a, a, a, a, a, a] %}{{ 'k' ~ d }}",
        "{% set a = 'x' * 999999 %}{{ ('%s' * 300) % ((a,) * 300) }}",
        # Big integers: each product doubles the digits (2**1000 squared 7 times: 128,000 bits).
        "{% set a = 2 ** 1000 %}{% set a = a * a %}{% set a = a * a %}{% set a = a * a %}"
        "{% set a = a * a %}{% set a = a * a %}{% set a = a * a %}{% set a = a * a %}"
        "{{ a > 1 }}",
    ],
)
def test_values_too_large_are_refused_before_they_are_built(source: str) -> None:
    error = refusal(source)
    assert error.details["limit"] == "render_value_chars"
    assert error.details["max"] == templates.MAX_VALUE_CHARS


def test_ranges_above_the_sandbox_limit_are_refused() -> None:
    error = refusal("{% for i in range(10**7) %}{% endfor %}")
    assert error.details["error"] == "OverflowError"


def test_a_normal_template_renders_the_same_under_the_budget() -> None:
    rag = next(t for t in DEFAULT_TEMPLATES if t.name == "rag.answer")
    sources = [{"n": n, "title": f"doc {n}", "text": "lorem ipsum " * 40} for n in range(1, 21)]
    variables = {"question": "What?", "sources": sources}
    compiled = templates.compile_template(rag.content)
    budget = RenderBudget(RenderLimits(), templates.TEMPLATE_FILENAME)
    assert templates.render(compiled, variables, budget) == compiled.template.render(variables)
    assert 0 < budget.operations < 2_000


def test_the_tracer_of_the_thread_is_restored() -> None:
    def tracer(frame: types.FrameType, event: str, arg: Any) -> None:
        return None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        render_now("{{ 1 }}")
        with pytest.raises(ValidationFailed):
            render_now(NESTED_LOOPS, max_operations=1000)
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(previous)


def test_deeply_nested_templates_are_a_422_not_a_recursion_error() -> None:
    with pytest.raises(ValidationFailed) as caught:
        templates.compile_template("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}")
    assert caught.value.details == {"error": "nesting"}


# -- the renderer: cancel and stop end a render in flight ----------------------------------


async def test_stop_ends_a_render_in_flight() -> None:
    renderer = TemplateRenderer(UNBOUNDED)
    compiled = templates.compile_template(NESTED_LOOPS)
    task = asyncio.create_task(renderer.render(compiled, {}))
    budget = await started_render(renderer)
    async with asyncio.timeout(HANG_GUARD_S):
        await renderer.stop()  # returns once the render thread has ended
    assert task.done() and not renderer.running
    with pytest.raises(DependencyUnavailable):
        task.result()
    assert budget.stop_reason == "the prompt service is stopping"
    with pytest.raises(DependencyUnavailable):
        await renderer.render(compiled, {})


async def test_a_cancelled_request_ends_its_render() -> None:
    renderer = TemplateRenderer(UNBOUNDED)
    task = asyncio.create_task(renderer.render(templates.compile_template(NESTED_LOOPS), {}))
    budget = await started_render(renderer)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: not renderer.running)
    assert budget.stop_reason == "the request was cancelled"
    await renderer.stop()


# -- through the app ------------------------------------------------------------------------


@pytest.fixture
async def env(make_settings: Callable[..., Settings]) -> AsyncIterator[Platform]:
    settings = make_settings(prompt_render_max_ops=50_000, prompt_max_output_bytes=10_000)
    async with platform(settings, ["prompt"]) as env:
        yield env


async def create(env: Platform, name: str, content: str) -> None:
    body = {"name": name, "content": content}
    response = await env.client.post(f"{BASE}/templates", json=body, headers=A)
    assert response.status_code == 201, response.text


async def test_the_nested_loop_template_is_a_422_naming_the_limit(env: Platform) -> None:
    await create(env, "loops", NESTED_LOOPS)
    response = await env.client.post(f"{BASE}/render", json={"name": "loops"}, headers=A)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["limit"] == "render_operations"
    assert response.json()["error"]["details"]["max"] == 50_000
    await create(env, "big", "{% for i in range(2000) %}{{ 'xxxxxxxxxx' }}{% endfor %}")
    response = await env.client.post(f"{BASE}/render", json={"name": "big"}, headers=A)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["limit"] == "render_output_bytes"
    await create(env, "ok", "Hello {{ name }}")
    response = await env.client.post(
        f"{BASE}/render", json={"name": "ok", "variables": {"name": "Ada"}}, headers=A
    )
    assert response.json()["data"]["rendered"] == "Hello Ada"


async def test_a_deeply_nested_template_is_refused_at_creation(env: Platform) -> None:
    content = "{{ " + "[" * 3000 + "]" * 3000 + " }}"
    response = await env.client.post(
        f"{BASE}/templates", json={"name": "deep", "content": content}, headers=A
    )
    assert response.status_code == 422, response.text


async def test_versions_beyond_a_database_integer_are_a_422(env: Platform) -> None:
    await create(env, "v", "x")
    too_big = 2**31
    checks = [
        await env.client.get(f"{BASE}/templates/v", params={"version": too_big}, headers=A),
        await env.client.post(f"{BASE}/render", json={"name": "v", "version": too_big}, headers=A),
        await env.client.post(
            f"{BASE}/templates/v/labels", json={"label": "x", "version": too_big}, headers=A
        ),
    ]
    for response in checks:
        assert response.status_code == 422, response.text
        assert "version" in response.text
    fits = await env.client.get(f"{BASE}/templates/v", params={"version": 2**31 - 1}, headers=A)
    assert fits.status_code == 404


async def test_cpu_work_runs_on_the_render_threads_not_the_loop(
    env: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []

    def recording(function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            threads.append(threading.current_thread().name)
            return function(*args, **kwargs)

        return call

    for module, name in [
        (templates, "compile_template"),
        (templates, "render"),
        (prompt_service_module, "count_chat_tokens"),
    ]:
        monkeypatch.setattr(module, name, recording(getattr(module, name)))
    await create(env, "t", "Hi {{ name }}")
    rendered = await env.client.post(
        f"{BASE}/render", json={"name": "t", "variables": {"name": "x"}}, headers=A
    )
    assert rendered.status_code == 200, rendered.text
    messages = [{"role": "user", "content": "hello " * 1000}] * 3
    context = await env.client.post(
        f"{BASE}/context", json={"messages": messages, "max_tokens": 2500}, headers=A
    )
    assert context.status_code == 200, context.text
    assert len(threads) >= 5
    assert all(name.startswith("faas-prompt") for name in threads), threads


async def test_shutdown_ends_a_render_in_flight(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(prompt_render_max_ops=10**15, prompt_render_timeout_s=10**6)
    async with platform(settings, ["prompt"]) as env:
        await create(env, "loops", NESTED_LOOPS)
        request = asyncio.create_task(
            env.client.post(f"{BASE}/render", json={"name": "loops"}, headers=A)
        )
        service = env.app.state.services["prompt"]
        await started_render(service.renderer)
    # Leaving the block ran the lifespan's shutdown: the render ended, the request answered.
    async with asyncio.timeout(HANG_GUARD_S):
        response = await request
    assert response.status_code == 503, response.text
    assert not service.renderer.running


async def test_small_variables_are_hashed_on_the_loop_and_large_ones_on_the_render_threads(
    env: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The render cache's key hashes the variables: a thread hop for an agent's few hundred
    bytes cost more than the hash; megabytes still leave the loop."""
    threads: list[str] = []
    digest = stored_templates._digest

    def recording(variables: Any) -> str:
        threads.append(threading.current_thread().name)
        return digest(variables)

    monkeypatch.setattr(stored_templates, "_digest", recording)
    await create(env, "t", "Hi {{ name }}")
    for notes in ("", "y" * (INLINE_CHARS + 1)):  # unused by the template, part of the key
        body = {"name": "t", "variables": {"name": "x", "notes": notes}}
        rendered = await env.client.post(f"{BASE}/render", json=body, headers=A)
        assert rendered.status_code == 200, rendered.text
    assert threads[0] == threading.current_thread().name
    assert threads[1].startswith("faas-prompt"), threads


def test_json_chars_counts_a_value_and_stops_past_its_limit() -> None:
    # {} 2, two pairs 2 each, "name" 7, "Ada" 6, "tools" 8, [] 2, three scalars 8 each, ["x"] 6
    assert (
        json_chars({"name": "Ada", "tools": [1, 2.5, None, ["x"]]})
        == 2 + 4 + 7 + 6 + 8 + 2 + 24 + 6
    )
    huge = ["x" * 100] * 1_000_000
    assert 1000 < json_chars(huge, limit=1000) <= 1000 + 103  # one string past it, not a million
