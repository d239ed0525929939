"""A deployment whose key's variable is unset is unavailable, not fatal: its model falls back
to the next deployment, and a model with no usable deployment answers 503 naming the variable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from faas.services.gateway_service.routing_table import (
    describe_unavailable,
    env_reference,
    load_routing,
    unavailable_deployments,
)
from faas.shared.config import Settings
from tests.conftest import auth
from tests.gateway_app import gateway_env

UNSET = "FAAS_TEST_UNSET_PROVIDER_KEY"
ROUTING = f"""
models:
  - name: chat-default
    deployments:
      - provider: openai
        model: gpt-4o-mini
        api_key: env:{UNSET}
      - provider: mock
  - name: paid-only
    deployments:
      - provider: openai
        model: gpt-4o-mini
        api_key: ${{{UNSET}}}
  - name: embed-default
    kind: embedding
    deployments:
      - provider: hash
"""


@pytest.fixture
def routing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(UNSET, raising=False)
    path = tmp_path / "models.yaml"
    path.write_text(ROUTING)
    return path


def test_key_references_take_three_spellings() -> None:
    assert env_reference("env:OPENAI_API_KEY") == "OPENAI_API_KEY"
    assert env_reference("$OPENAI_API_KEY") == "OPENAI_API_KEY"
    assert env_reference("${OPENAI_API_KEY}") == "OPENAI_API_KEY"
    assert env_reference("sk-literal") is None


def test_an_unset_key_marks_the_deployment_unavailable(routing_file: Path) -> None:
    table = load_routing(routing_file)
    lines = [describe_unavailable(m, d) for m, d in unavailable_deployments(table)]
    assert lines == [
        f"model 'chat-default': deployment openai:gpt-4o-mini is unavailable (api_key needs "
        f"${UNSET}, which is not set); requests use mock:default",
        f"model 'paid-only': deployment openai:gpt-4o-mini is unavailable (api_key needs "
        f"${UNSET}, which is not set); the model has no other deployment: its requests get 503",
    ]


def test_a_set_key_is_used(routing_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(UNSET, "sk-test")
    table = load_routing(routing_file)
    assert unavailable_deployments(table) == []
    key = table.models[0].deployments[0].api_key
    assert key is not None and key.get_secret_value() == "sk-test"


async def test_requests_fall_back_or_get_503_naming_the_variable(
    routing_file: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(gateway_models=routing_file)
    async with gateway_env(settings) as env:
        ask = {"messages": [{"role": "user", "content": "hi"}]}
        served = await env.client.post(
            "/v1/chat/completions", json={"model": "chat-default", **ask}, headers=auth("acme")
        )
        assert served.status_code == 200, served.text
        assert served.headers["x-faas-deployment"] == "mock:default"
        refused = await env.client.post(
            "/v1/chat/completions", json={"model": "paid-only", **ask}, headers=auth("acme")
        )
        assert refused.status_code == 503, refused.text
        assert f"${UNSET}, which is not set" in refused.json()["error"]["message"]
        health = await env.client.get("/api/v1/gateway/providers", headers=auth("acme"))
        healthy = {(h["model"], h["deployment"]): h["healthy"] for h in health.json()["data"]}
        assert healthy[("chat-default", "openai:gpt-4o-mini")] is False


def test_an_invalid_routing_file_is_one_line_per_problem(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    from faas.diagnostics import check_routing, startup_problems

    path = tmp_path / "models.yaml"
    path.write_text(
        "models:\n  - name: chat\n    deployments:\n"
        "      - provider: opnai\n        api_key: sk-never-printed\n        timeout_s: -1\n"
    )
    problems = startup_problems(make_settings(gateway_models=path))
    assert problems == [
        f"FAAS_GATEWAY_MODELS={str(path)!r}: models.0.deployments.0.provider='opnai' is not "
        "allowed: use openai, litellm, llamacpp, minilm, hash, mock, cohere, cosine or anthropic",
        f"FAAS_GATEWAY_MODELS={str(path)!r}: models.0.deployments.0.timeout_s=-1 is not "
        "allowed: Input should be greater than 0",
    ]
    (check,) = check_routing(make_settings(gateway_models=path))
    assert check.status == "fail" and "sk-never-printed" not in check.line()


def test_doctor_fails_a_model_left_without_a_usable_deployment(
    routing_file: Path, make_settings: Callable[..., Settings]
) -> None:
    from faas.diagnostics import check_routing

    lines = [c.line() for c in check_routing(make_settings(gateway_models=routing_file))]
    assert lines[0].startswith("ok    model routing:")
    assert lines[1].startswith("warn  deployment key: model 'chat-default'")
    assert lines[2].startswith("fail  deployment key: model 'paid-only'")
    assert lines[2].endswith(f"-> export {UNSET}=... (or remove the deployment)")
