"""Step 8, items 4 and 9, as a user meets them: configuration mistakes get one line and exit 2,
a routing file with an unset key still starts (with a warning) and falls back, `faas doctor`
checks the real servers, `faas config` shows the settings with secrets masked."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from faas.shared.auth import mint_token
from tests.conftest import TEST_SECRET
from tests.e2e.test_faas_up import faas_env, free_port, stop, wait_ready
from tests.support.pgvector import fresh_database

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

UNSET_KEY = "FAAS_TEST_FIRST_HOUR_OPENAI_KEY"
ROUTING = f"""\
models:
  - name: chat-default
    deployments:
      - provider: openai
        model: gpt-4o-mini
        api_base: https://api.openai.com/v1
        api_key: env:{UNSET_KEY}
      - provider: mock
        model: faas-mock
  - name: embed-default
    kind: embedding
    deployments:
      - provider: hash
        model: hash-384
        dimensions: 384
"""


def faas(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "faas", *args], env=env, capture_output=True, text=True, timeout=90
    )


def problem_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("FAAS_ENV", "prod", "FAAS_ENV='prod' is not allowed: use development or production"),
        ("FAAS_PORT", "80OO", "FAAS_PORT='80OO' is not allowed: use a whole number"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    env = faas_env(tmp_path / "data") | {variable: value}
    result = faas("up", "--port", str(free_port()), env=env)
    assert result.returncode == 2
    assert problem_lines(result.stderr) == [f"configuration error: {expected}"]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_an_unknown_service_is_refused_with_the_closest_name(tmp_path: Path) -> None:
    env = faas_env(tmp_path / "data") | {"FAAS_SERVICES": "gateway,cahce"}
    result = faas("up", "--port", str(free_port()), env=env)
    assert result.returncode == 2
    (line,) = problem_lines(result.stderr)
    assert "FAAS_SERVICES='gateway,cahce'" in line and "unknown service 'cahce'" in line
    assert "did you mean 'cache'?" in line

    served = faas("serve", "cahce", env=faas_env(tmp_path / "data"))
    assert served.returncode == 2
    (line,) = problem_lines(served.stderr)
    assert "unknown service 'cahce' (did you mean 'cache'?)" in line


def test_an_invalid_routing_file_stops_the_start_with_one_line(tmp_path: Path) -> None:
    routing = tmp_path / "models.yaml"
    routing.write_text(ROUTING.replace("provider: mock", "provider: mokc"))
    env = faas_env(tmp_path / "data") | {"FAAS_GATEWAY_MODELS": str(routing)}
    result = faas("up", "--port", str(free_port()), env=env)
    assert result.returncode == 2
    assert problem_lines(result.stderr) == [
        f"configuration error: FAAS_GATEWAY_MODELS={str(routing)!r}: "
        "models.0.deployments.1.provider='mokc' is not allowed: use openai, litellm, llamacpp, "
        "minilm, hash, mock, cohere, cosine or anthropic"
    ]


def test_an_unset_key_warns_and_chat_falls_back(tmp_path: Path) -> None:
    routing = tmp_path / "models.yaml"
    routing.write_text(ROUTING)
    env = faas_env(tmp_path / "data") | {
        "FAAS_GATEWAY_MODELS": str(routing),
        "FAAS_SERVICES": "gateway",
        "FAAS_JWT_SECRET": TEST_SECRET,
    }
    env.pop(UNSET_KEY, None)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "stderr.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "faas", "up", "--port", str(port)], env=env, stderr=err
        )
        try:
            wait_ready(url, proc)
            token = mint_token(TEST_SECRET, tenant_id="demo", user_id="dev", ttl_s=600)
            answer = httpx.post(
                f"{url}/v1/chat/completions",
                json={"model": "chat-default", "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
        finally:
            assert stop(proc) == 0
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-faas-deployment"] == "mock:faas-mock"
    text = log.read_text()
    warnings = [line for line in text.splitlines() if f"${UNSET_KEY}" in line]
    assert len(warnings) == 1, text
    assert "deployment openai:gpt-4o-mini@https://api.openai.com/v1 is unavailable" in warnings[0]
    assert "requests use mock:faas-mock" in warnings[0]
    assert "Traceback" not in text


@pytest.fixture
async def migrated_database(postgres_url: str) -> AsyncIterator[str]:
    async with fresh_database(postgres_url, prefix="faas_doctor") as url:
        yield url


def closed_port() -> int:
    """A port nothing listens on: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_doctor_passes_against_the_real_servers_and_names_the_fix_when_one_is_down(
    tmp_path: Path, migrated_database: str, redis_url: str, nats_url: str
) -> None:
    env = faas_env(tmp_path / "data") | {
        "FAAS_DATABASE_URL": migrated_database,
        "FAAS_REDIS_URL": redis_url,
        "FAAS_NATS_URL": nats_url,
        "FAAS_VECTOR_URL": "sqlite",
        "FAAS_PORT": str(free_port()),
    }
    assert faas("migrate", env=env).returncode == 0
    result = faas("doctor", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split(":", 1)[0]: line for line in result.stdout.splitlines()}
    for check in ("database", "redis", "nats", "vector store", "port"):
        assert f"ok    {check}" in lines, result.stdout
    assert "migrated to head" in lines["ok    database"]
    assert "with JetStream" in lines["ok    nats"]

    # The CI's PostgreSQL has no pgvector, and Redis is pointed at a closed port.
    down = env | {"FAAS_REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0"}
    del down["FAAS_VECTOR_URL"]
    result = faas("doctor", env=down)
    assert result.returncode == 1
    failed = [line for line in result.stdout.splitlines() if line.startswith("fail")]
    assert len(failed) == 2, result.stdout
    redis, vectors = sorted(failed, key=lambda line: "vector" in line)
    assert redis.startswith("fail  redis: cannot reach redis://127.0.0.1:")
    assert redis.endswith("-> start Redis or correct FAAS_REDIS_URL")
    assert "has no pgvector extension" in vectors and "FAAS_VECTOR_URL=sqlite" in vectors


def test_config_shows_sources_and_masks_secrets(tmp_path: Path) -> None:
    secret = "a-jwt-secret-that-must-never-be-printed-0123456789"
    database = "postgresql+asyncpg://faas:hunter2-db-password@db.internal:5432/faas"
    env = faas_env(tmp_path / "data") | {"FAAS_JWT_SECRET": secret, "FAAS_DATABASE_URL": database}
    result = faas("config", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert secret not in out and "hunter2-db-password" not in out
    rows = {line.split("=", 1)[0]: line for line in out.splitlines() if line.startswith("FAAS_")}
    assert rows["FAAS_JWT_SECRET"].split() == ["FAAS_JWT_SECRET=********", "#", "env"]
    assert rows["FAAS_DATABASE_URL"].split() == [
        "FAAS_DATABASE_URL=postgresql+asyncpg://faas:********@db.internal:5432/faas",
        "#",
        "env",
    ]
    assert rows["FAAS_ENV"].split() == ["FAAS_ENV=development", "#", "default"]
