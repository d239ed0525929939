"""Configuration mistakes: one line per problem naming the variable, the value and what is
allowed; unknown services refused with the closest name; secrets never printed."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from faas.services import load_settings, unknown_service
from faas.shared.config import ConfigError, Settings, masked


def problems(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    return refused.value.problems


def test_a_value_outside_a_choice_names_the_allowed_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    assert problems(monkeypatch, FAAS_ENV="prod") == [
        "FAAS_ENV='prod' is not allowed: use development or production"
    ]


def test_every_invalid_variable_gets_its_own_line(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = problems(
        monkeypatch,
        FAAS_PORT="80a",
        FAAS_LOG_REQUESTS="maybe",
        FAAS_CPU_WORKERS="0",
        FAAS_GATEWAY_LIMITS_ON_STORE_ERROR="half",
    )
    assert sorted(lines) == [
        "FAAS_CPU_WORKERS='0' is not allowed: use a value at least 1",
        "FAAS_GATEWAY_LIMITS_ON_STORE_ERROR='half' is not allowed: use open or closed",
        "FAAS_LOG_REQUESTS='maybe' is not allowed: use true or false",
        "FAAS_PORT='80a' is not allowed: use a whole number",
    ]


def test_unknown_services_are_refused_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (line,) = problems(monkeypatch, FAAS_SERVICES="gateway,cahce")
    assert line.startswith("FAAS_SERVICES='gateway,cahce' is not allowed: unknown service 'cahce'")
    assert "(did you mean 'cache'?)" in line


def test_a_name_close_to_nothing_gets_no_suggestion() -> None:
    assert "did you mean" not in unknown_service("zzzzzz")
    assert "did you mean 'prompt_generator'" in unknown_service("prompt-generator")


def test_known_services_are_accepted(make_settings: Callable[..., Settings]) -> None:
    assert make_settings(services=["gateway", "cache"]).services == ["gateway", "cache"]
    # No service at all: a worker that runs only FAAS_JOB_MODULES' job kinds.
    assert make_settings(services="").services == []


def test_secrets_and_url_passwords_are_masked() -> None:
    assert masked("jwt_secret", "s3cr3t-value") == "********"
    assert masked("database_url", "postgresql://faas:hunter2@db:5432/faas") == (
        "postgresql://faas:********@db:5432/faas"
    )
    assert masked("redis_url", "redis://:hunter2@cache:6379/0") == "redis://:********@cache:6379/0"
    assert masked("nats_url", "nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
    assert masked("port", 8000) == "8000"


def test_the_test_suites_variables_are_not_service_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI exports FAAS_TEST_DATABASE_URL & co. into every process; they name no service."""
    monkeypatch.setenv("FAAS_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1/test")
    monkeypatch.setenv("FAAS_TEST_NATS_URL", "nats://127.0.0.1:4222")
    monkeypatch.setenv("FAAS_CACHE_URL", "http://cache:8001")
    assert load_settings().service_urls == {"cache": "http://cache:8001"}
    # Outside that prefix a stray variable is still refused.
    (line,) = problems(monkeypatch, FAAS_CAHCE_URL="http://cache:8001")
    assert "FAAS_CAHCE_URL='http://cache:8001' is not allowed" in line
