"""The gateway as real processes: `faas up` (combined and --split) in front of the mock upstream
running as its own process, used with the official `openai` client over real HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.test_faas_up import faas, faas_env, free_port, stop, wait_ready
from tests.support.mock_upstream import upstream_process

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
REPLY = "Hello from the mock upstream."
HI = [{"role": "user", "content": "hi"}]


@dataclass
class Faas:
    url: str
    env: dict[str, str]

    def token(self, tenant: str, *scopes: str) -> str:
        args = ["token", "--tenant", tenant]
        for scope in scopes:
            args += ["--scope", scope]
        return faas(*args, env=self.env)

    def client(self, token: str) -> openai.OpenAI:
        # No retries: a 429 must surface at once (the client would otherwise sleep Retry-After).
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=token, max_retries=0, timeout=90)


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
  - name: embed
    kind: embedding
    deployments:
      - provider: hash
        dimensions: 64
"""


def services_env(data_dir: Path) -> dict[str, str]:
    # Only the services these tests use: fewer processes under --split, faster startup.
    return faas_env(data_dir) | {"FAAS_SERVICES": "gateway,cache"}


class Process:
    """`faas up ...` with its stderr kept in a file, shown when it misbehaves."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        with log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "faas", "up", *args],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=sink,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_ready(self, url: str) -> None:
        try:
            wait_ready(url, self.proc)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.output()}") from None

    def stop(self) -> None:
        code = stop(self.proc)
        assert code == 0, f"faas exited with {code}\n{self.output()}"


@contextmanager
def gateway_on(base: Path, routing: str) -> Iterator[Faas]:
    """`faas up` (gateway and cache) on a free port with `routing` as its routing file."""
    models = base / "models.yaml"
    models.write_text(routing)
    env = services_env(base / "data") | {"FAAS_GATEWAY_MODELS": str(models)}
    port = free_port()
    proc = Process(env, base / "faas.log", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_ready(url)
        yield Faas(url, env)
    finally:
        proc.stop()


def port_pair() -> int:
    """An offset K with 8001+K and 8002+K both free (gateway and cache under --split)."""
    for _ in range(50):
        first = free_port()
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", first + 1))
        except OSError:
            continue
        return first - 8001
    raise AssertionError("no two adjacent free ports")


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with upstream_process() as url:
        yield url


@pytest.fixture(scope="module")
def gateway(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faas]:
    with gateway_on(tmp_path_factory.mktemp("gateway"), routing(upstream)) as gateway:
        yield gateway


def control(upstream: str, **changes: object) -> None:
    response = httpx.post(f"{upstream}/_control", json=changes, timeout=5)
    assert response.status_code == 200, response.text


def test_openai_client_chat_stream_tools_embeddings_and_models(
    gateway: Faas, upstream: str
) -> None:
    client = gateway.client(gateway.token("acme"))
    try:
        reply = client.chat.completions.create(model="chat", messages=HI, temperature=0.5)
        assert reply.choices[0].message.content == REPLY
        assert reply.usage is not None and reply.usage.total_tokens == 17

        stream = client.chat.completions.create(model="chat", messages=HI, stream=True)
        parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
        assert "".join(parts) == REPLY and len(parts) > 2

        control(upstream, tool_calls=True)
        try:
            tools = [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "parameters": {"type": "object", "properties": {}},
                    },
                }
            ]
            called = client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "weather?"}], tools=tools
            )
        finally:
            control(upstream, tool_calls=False)
        choice = called.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls is not None
        assert choice.message.tool_calls[0].function.name == "get_weather"
        stats = httpx.get(f"{upstream}/_stats", timeout=5).json()
        assert stats["last_body"]["tools"] == tools

        vectors = client.embeddings.create(model="embed", input=["alpha", "beta"])
        assert [d.index for d in vectors.data] == [0, 1]
        assert len(vectors.data[0].embedding) == 64

        assert {m.id for m in client.models.list()} == {"chat", "embed"}
    finally:
        client.close()


def test_errors_map_to_openai_exceptions(gateway: Faas) -> None:
    # Its own tenant: its per-minute counter starts at zero whatever ran before.
    tenant = "initech"
    client = gateway.client(gateway.token(tenant))
    try:
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="no-such-model", messages=HI)
        with gateway.client("not-a-token") as stranger, pytest.raises(openai.AuthenticationError):
            stranger.models.list()

        admin = {"Authorization": f"Bearer {gateway.token(tenant, 'admin')}"}
        response = httpx.put(
            f"{gateway.url}/api/v1/gateway/limits/{tenant}", json={"rpm": 1}, headers=admin
        )
        assert response.status_code == 200, response.text
        left = 60 - time.time() % 60
        if left < 3:  # both calls must land in the same minute window
            time.sleep(left + 0.05)
        client.chat.completions.create(model="chat", messages=HI, temperature=0.5)
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="chat", messages=HI, temperature=0.5)
        assert refused.value.status_code == 429
        assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
    finally:
        client.close()


def test_faas_up_without_routing_serves_the_defaults_offline(tmp_path: Path) -> None:
    env = services_env(tmp_path / "data")
    port = free_port()
    proc = Process(env, tmp_path / "faas.log", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_ready(url)
        running = Faas(url, env)
        token = running.token("acme")
        client = running.client(token)
        try:
            assert {m.id for m in client.models.list()} == {
                "chat-default",
                "embed-default",
                "rerank-default",
            }
            reply = client.chat.completions.create(model="chat-default", messages=HI, max_tokens=8)
            assert reply.choices[0].message.content
            vectors = client.embeddings.create(model="embed-default", input="hello")
            assert len(vectors.data[0].embedding) == 384
        finally:
            client.close()
        native = httpx.get(
            f"{url}/api/v1/gateway/models", headers={"Authorization": f"Bearer {token}"}
        )
        assert native.json()["data"]["source"] == "built-in defaults"
    finally:
        proc.stop()


def test_faas_up_split_runs_the_gateway_in_its_own_process(upstream: str, tmp_path: Path) -> None:
    env = services_env(tmp_path / "data")
    models = tmp_path / "models.yaml"
    models.write_text(routing(upstream))
    env["FAAS_GATEWAY_MODELS"] = str(models)
    offset = port_pair()
    proc = Process(env, tmp_path / "faas.log", "--split", "--port-offset", str(offset))
    gateway_url = f"http://127.0.0.1:{8001 + offset}"
    cache_url = f"http://127.0.0.1:{8002 + offset}"
    try:
        proc.wait_ready(gateway_url)
        proc.wait_ready(cache_url)
        assert httpx.get(f"{gateway_url}/readyz").json()["services"] == ["gateway"]
        assert httpx.get(f"{cache_url}/readyz").json()["services"] == ["cache"]
        running = Faas(gateway_url, env)
        client = running.client(running.token("acme"))
        try:
            reply = client.chat.completions.create(model="chat", messages=HI, temperature=0.5)
            assert reply.choices[0].message.content == REPLY
        finally:
            client.close()
    finally:
        proc.stop()
